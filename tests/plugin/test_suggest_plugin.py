"""Where to label next in the dock: Suggest adds the squares as a styled layer, ◀ ▶ zoom
to each with the labels layer active for drawing; quick fine-tune and the report that
puts quick and full side by side."""

from __future__ import annotations

from qgis.core import QgsFeature, QgsProject, QgsRasterLayer, QgsVectorLayer
from test_end_to_end import messages, wait_for  # tests/plugin is on sys.path

from gfm_plugin.report_view import comparison_html, same_labels


def _draw(plugin, backend_outputs):
    """A labels layer with the analyst's polygons, as in the fine-tune test."""
    plugin.dock.class_name_edit.setText("built-up, field, forest, water")
    labels = plugin.new_labels_layer()
    drawn = QgsVectorLayer(str(backend_outputs / "labels.gpkg"), "drawn", "ogr")
    for f in drawn.getFeatures():
        g = QgsFeature(labels.fields())
        g.setGeometry(f.geometry())
        g["class"] = f["class"]
        assert labels.addFeature(g)
    plugin.dock.field_combo.setField("class")
    return labels


def test_suggest_then_step_through_the_places(plugin, backend_outputs, iface):
    raster = QgsRasterLayer(str(backend_outputs / "scene.tif"), "scene")
    QgsProject.instance().addMapLayer(raster)
    plugin.connect()
    plugin.dock.raster_combo.setLayer(raster)
    labels = _draw(plugin, backend_outputs)
    row = plugin.dock.suggest_row
    row.count_spin.setValue(3)
    task = plugin.suggest.suggest()
    wait_for(task)
    assert task.info["state"] == "succeeded", task.error
    assert task.params["labels"].endswith(".gpkg") and not labels.isModified()
    layer = plugin.suggest.layer
    assert layer is not None and layer.name().startswith("scene suggestions")
    assert QgsProject.instance().layerTreeRoot().children()[0].name() == layer.name()
    assert layer.labelsEnabled() and layer.crs() == raster.crs()
    count = layer.featureCount()
    assert 1 <= count <= 3 and row.next_button.isEnabled()
    first = layer.getFeature(plugin.suggest.ids[0])
    assert first["rank"] == 1 and row.position.text().startswith(f"1/{count}: ")
    assert first["hesitates"] in row.position.text()
    canvas = iface.mapCanvas()
    assert canvas.extent().contains(first.geometry().boundingBox())
    iface.setActiveLayer.assert_called_with(labels)  # drawing goes to the labels layer
    row.next_button.click()
    assert row.position.text().startswith(f"{2 if count > 1 else 1}/{count}")
    row.prev_button.click()
    row.prev_button.click()  # wraps round to the last
    assert row.position.text().startswith(f"{count}/{count}")
    assert any("places to label next" in m for m in messages(iface))


def test_quick_fine_tune_from_the_dock_and_the_report_beside_full(plugin, backend_outputs):
    raster = QgsRasterLayer(str(backend_outputs / "scene.tif"), "scene")
    QgsProject.instance().addMapLayer(raster)
    plugin.connect()
    plugin.dock.raster_combo.setLayer(raster)
    _draw(plugin, backend_outputs)
    plugin.dock.config_combo.setCurrentIndex(plugin.dock.config_combo.findData("config:tiny"))
    plugin.dock.quick_check.setChecked(True)
    assert not plugin.dock.epochs_spin.isEnabled()
    plugin.dock.model_name_edit.setText("quick-model")
    task = plugin.finetune_current()
    wait_for(task, timeout=600)
    assert task.info["state"] == "succeeded", task.error
    assert task.info["params"]["quick"] is True
    assert task.info["outputs"]["training"].startswith("quick")
    plugin.dock.jobs.setCurrentItem(plugin.dock.jobs.topLevelItem(0))
    assert "training: quick" in plugin.dock.report.text.text()


def test_the_report_compares_the_fine_tunes_on_the_same_labels():
    def job(name, quick, miou, created, labels="a.gpkg"):
        return {"type": "finetune", "state": "succeeded",
                "params": {"labels": labels, "rasters": ["r.tif"], "class_field": "class",
                           "out": f"/m/{name}", "quick": quick},
                "outputs": {"validation": {"mean_iou": miou}},
                "timings": {"created": created, "run_s": 4.0 if quick else 300.0}}

    full, quick = job("full", False, 0.81, "2026-01-02"), job("fast", True, 0.74, "2026-01-03")
    other = job("else", True, 0.5, "2026-01-01", labels="b.gpkg")
    runs = same_labels(quick, [quick, other, full])
    assert runs == [full, quick]
    table = comparison_html(runs)
    assert "full" in table and "quick" in table and "0.81" in table and "0.74" in table
    assert "300 s" in table and "else" not in table
    assert comparison_html([quick]) == ""


def test_a_classify_result_is_never_taken_for_labels(backend_outputs):
    from gfm_plugin import layers

    result = QgsVectorLayer(str(backend_outputs / "classified" / "polygons.gpkg"), "p", "ogr")
    drawn = QgsVectorLayer(str(backend_outputs / "labels.gpkg"), "drawn", "ogr")
    assert result.isValid() and layers.is_result_layer(result)
    assert not layers.is_result_layer(drawn)


def test_fine_tune_on_a_classify_result_asks_first(plugin, backend_outputs):
    raster = QgsRasterLayer(str(backend_outputs / "scene.tif"), "scene")
    result = QgsVectorLayer(str(backend_outputs / "classified" / "polygons.gpkg"), "polygons", "ogr")
    QgsProject.instance().addMapLayers([raster, result])
    plugin.dock.raster_combo.setLayer(raster)
    plugin.dock.labels_combo.setLayer(result)
    asked = []
    plugin.confirm = lambda text: asked.append(text) or False
    assert plugin.finetune_current() is None
    assert "classification result" in asked[0]
