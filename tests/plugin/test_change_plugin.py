"""Change detection from QGIS against a real backend: the dock's Detect changes group
(draw change polygons, fine-tune for changes, detect, a styled group named after the
pair) and the two Processing algorithms."""

from __future__ import annotations

import pytest
from qgis.core import (
    QgsFeature,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from test_end_to_end import messages, wait_for  # tests/plugin is on sys.path


def _dates(backend_outputs):
    layers = [QgsRasterLayer(str(backend_outputs / f"{n}.tif"), n) for n in ("before", "after")]
    QgsProject.instance().addMapLayers(layers)
    return layers


def test_dock_draws_fine_tunes_and_detects_changes(plugin, backend_outputs, iface):
    before, after = _dates(backend_outputs)
    assert plugin.connect()
    box = plugin.dock.change
    assert box.model_combo.count() == 1 and plugin.dock.model_combo.count() == 1
    box.before_combo.setLayer(before)
    box.after_combo.setLayer(after)
    box.kinds_edit.setText("cleared, new building")
    labels = plugin.change.new_labels_layer()
    assert labels.isEditable() and labels.crs() == before.crs()
    assert box.field_combo.currentField() == "class"
    drawn = QgsVectorLayer(str(backend_outputs / "changes.gpkg"), "drawn", "ogr")
    for f in drawn.getFeatures():  # the analyst's change polygons
        g = QgsFeature(labels.fields())
        g.setGeometry(f.geometry())
        g.setAttribute("class", f["class"])
        labels.addFeature(g)
    plugin.dock.epochs_spin.setValue(1)
    box.model_name_edit.setText("my-changes")
    task = plugin.change.finetune()
    wait_for(task)
    assert task.info.get("state") == "succeeded", (task.error, task.info)
    assert task.params["class_field"] == "class" and labels.isEditable()
    assert any("change model my-changes trained; change F1" in m for m in messages(iface))
    assert box.model_combo.count() == 2
    box.model_combo.setCurrentIndex(box.model_combo.findText("my-changes"))
    task = plugin.change.detect()
    wait_for(task)
    assert task.info.get("state") == "succeeded", (task.error, task.info)
    group = QgsProject.instance().layerTreeRoot().findGroup("before → after")
    assert group is not None
    assert [n.layer().name() for n in group.findLayers()] == ["changed regions", "change",
                                                            "confidence"]
    change = group.findLayers()[1].layer()
    assert change.crs() == before.crs() and change.renderer().type() == "paletted"


def test_detect_changes_needs_two_different_dates(plugin, backend_outputs, iface):
    before, _ = _dates(backend_outputs)
    plugin.dock.change.before_combo.setLayer(before)
    plugin.dock.change.after_combo.setLayer(before)
    assert plugin.change.detect() is None
    assert "two different raster layers" in messages(iface)[-1]


def test_processing_change_algorithms(use_backend, backend_server, backend_outputs, tmp_path,
                                      qgis_app):
    from gfm_plugin.processing import declared
    from gfm_plugin.processing.algorithms import DetectChangeAlgorithm, FinetuneChangeAlgorithm
    from gfm_plugin.processing.provider import offer_models

    offer_models(backend_server[0].models())
    before, after = _dates(backend_outputs)
    labels = QgsVectorLayer(str(backend_outputs / "changes.gpkg"), "changes", "ogr")
    QgsProject.instance().addMapLayer(labels)
    train = FinetuneChangeAlgorithm()
    train.initAlgorithm()
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    results, ok = train.run({"BEFORE": before.id(), "AFTER": after.id(), "LABELS": labels.id(),
                             "CLASS_FIELD": "class", "CONFIG": 1, "EPOCHS": 1, "CHIPS": 8,
                             "DEVICE": 1, "NO_ONNX": True, "OUTPUT": str(tmp_path / "model")},
                            context, QgsProcessingFeedback())
    assert ok, results
    assert (tmp_path / "model" / "model.json").is_file()
    detect = DetectChangeAlgorithm()
    detect.initAlgorithm()
    hints = detect.parameterDefinition("MODEL").metadata()["widget_wrapper"]["value_hints"]
    assert "change-model" in hints and "scene-model" not in hints  # change models only
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    results, ok = detect.run({"BEFORE": before.id(), "AFTER": after.id(), "MODEL": "change-model",
                              "DEVICE": 1, "OUTPUT": str(tmp_path / "changes")},
                             context, QgsProcessingFeedback())
    assert ok, results
    assert QgsRasterLayer(results["CHANGE"], "c").isValid()
    assert sorted(d.name for d in context.layersToLoadOnCompletion().values()) == [
        "change (before → after)", "confidence (before → after)", "polygons (before → after)"]
    declared.KNOWN_MODELS.clear()
    QgsProject.instance().removeAllMapLayers()


@pytest.fixture(autouse=True)
def _clean_project():
    yield
    QgsProject.instance().removeAllMapLayers()
