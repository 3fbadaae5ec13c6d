"""The plugin's actions end to end in real QGIS against a real backend process."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsTask,
    QgsVectorLayer,
)

from gfm_plugin import layers
from gfm_plugin.client import BackendError


def wait_for(task, timeout=300):
    deadline = time.monotonic() + timeout
    while task.status() not in (QgsTask.TaskStatus.Complete, QgsTask.TaskStatus.Terminated):
        QgsApplication.processEvents()
        assert time.monotonic() < deadline, "task did not finish"
        time.sleep(0.05)
    for _ in range(20):  # let finished() run on the main thread
        QgsApplication.processEvents()
        time.sleep(0.01)


def messages(iface) -> list[str]:
    return [str(c.args[1]) for c in iface.messageBar().pushMessage.call_args_list]


def test_connect_lists_models_with_classes(plugin):
    assert plugin.connect(start=True)
    assert "connected" in plugin.dock.status.text() and "CPU" in plugin.dock.status.text()
    assert plugin.dock.model_combo.count() == 1
    names = [plugin.dock.class_list.item(i).text() for i in range(plugin.dock.class_list.count())]
    assert names == ["built-up", "field", "forest", "water"]


def test_classify_layer_adds_styled_group(plugin, backend_outputs, iface):
    layer = QgsRasterLayer(str(backend_outputs / "scene.tif"), "scene")
    QgsProject.instance().addMapLayer(layer)
    plugin.connect()
    plugin.dock.raster_combo.setLayer(layer)
    task = plugin.classify_current()
    wait_for(task)
    assert task.info["state"] == "succeeded", task.error
    group = QgsProject.instance().layerTreeRoot().findGroup("scene")
    assert group is not None
    assert [n.layer().name() for n in group.findLayers()] == [
        "polygons", "classes", "confidence"]
    assert any("classified scene" in m for m in messages(iface))
    assert plugin.dock.jobs.topLevelItemCount() == 1
    # results go to a new folder under the outputs folder the dock shows, never /tmp
    results = Path(plugin.settings.results_dir) / "results"
    assert Path(task.params["out"]).parent == results
    assert Path(task.params["out"]).name.startswith("scene-")
    assert str(results.parent) in plugin.dock.outputs_label.text()


def test_finetune_from_drawn_labels_registers_a_model(plugin, backend_outputs, iface):
    raster = QgsRasterLayer(str(backend_outputs / "scene.tif"), "scene")
    QgsProject.instance().addMapLayer(raster)
    plugin.connect()
    plugin.dock.raster_combo.setLayer(raster)
    plugin.dock.class_name_edit.setText("built-up, field, forest, water")
    labels = plugin.new_labels_layer()
    assert labels.isEditable()
    drawn = QgsVectorLayer(str(backend_outputs / "labels.gpkg"), "drawn", "ogr")
    for f in drawn.getFeatures():  # "draw" the analyst's polygons
        g = QgsFeature(labels.fields())
        g.setGeometry(f.geometry())
        g["class"] = f["class"]
        assert labels.addFeature(g)
    plugin.dock.model_name_edit.setText("drawn-model")
    plugin.dock.config_combo.setCurrentIndex(plugin.dock.config_combo.findData("config:tiny"))
    plugin.dock.epochs_spin.setValue(1)
    plugin.dock.field_combo.setField("class")
    task = plugin.finetune_current()
    wait_for(task, timeout=600)
    assert task.info["state"] == "succeeded", task.error
    assert not labels.isModified()  # the edits were saved before training
    assert labels.isEditable()  # and editing stays on: the analyst draws more
    assert any("IoU per class" in m for m in messages(iface))
    names = [plugin.dock.model_combo.itemText(i) for i in range(plugin.dock.model_combo.count())]
    assert "drawn-model" in names
    # the report of the selected job: scores and the package's plots, through the API
    plugin.dock.jobs.setCurrentItem(plugin.dock.jobs.topLevelItem(0))
    report = plugin.dock.report
    assert "mIoU" in report.text.text() and "built-up" in report.text.text()
    assert all(not label.pixmap().isNull() for label in report.plots.values())
    assert report.open_folder_button.isEnabled()

    # the same name again: replaced only when the analyst says yes
    asked = []
    plugin.confirm = lambda text: asked.append(text) or False
    assert plugin.finetune_current() is None and "drawn-model" in asked[0]
    plugin.confirm = lambda text: True
    again = plugin.finetune_current()
    wait_for(again, timeout=600)
    assert again.info["state"] == "succeeded", again.error
    assert again.info["params"]["overwrite"] is True


def test_processing_classify_algorithm(use_backend, backend_server, backend_outputs, tmp_path,
                                       qgis_app):
    from gfm_plugin.processing import declared
    from gfm_plugin.processing.algorithms import ClassifyAlgorithm
    from gfm_plugin.processing.provider import offer_models

    offer_models(backend_server[0].models())  # what the dock does when it lists them
    alg = ClassifyAlgorithm()
    alg.initAlgorithm()
    model = alg.parameterDefinition("MODEL")  # the backend's models to pick from
    hints = model.metadata()["widget_wrapper"]["value_hints"]
    assert "scene-model" in hints and model.defaultValue() == hints[0]
    assert alg.parameterDefinition("MODEL_FOLDER")
    layer = QgsRasterLayer(str(backend_outputs / "scene.tif"), "scene")
    QgsProject.instance().addMapLayer(layer)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = QgsProcessingFeedback()
    progress = []
    feedback.progressChanged.connect(progress.append)
    params = {"INPUT": layer.id(), "MODEL": "scene-model", "RUNTIME": 0,
              "DEVICE": 1, "MIN_AREA": 0.0, "OUTPUT": str(tmp_path / "out")}
    results, ok = alg.run(params, context, feedback)
    assert ok, results
    assert QgsRasterLayer(results["CLASSES"], "c").isValid()
    assert QgsVectorLayer(results["POLYGONS"], "p", "ogr").featureCount() > 0
    assert progress and max(progress) == pytest.approx(100.0)
    to_load = context.layersToLoadOnCompletion()  # what Processing adds to the map
    assert sorted(d.name for d in to_load.values()) == [
        "classes (scene)", "confidence (scene)", "polygons (scene)"]
    assert results["CLASSES"] in to_load
    polygons = QgsVectorLayer(results["POLYGONS"], "p", "ogr")  # styled as the dock does
    to_load[results["POLYGONS"]].postProcessor().postProcessLayer(polygons, context, feedback)
    assert polygons.renderer().type() == "categorizedSymbol"
    elsewhere = params | {"MODEL_FOLDER": str(backend_outputs / "model"),
                          "OUTPUT": str(tmp_path / "out2")}  # any package folder instead
    again = QgsProcessingContext()
    again.setProject(QgsProject.instance())
    assert alg.run(elsewhere, again, QgsProcessingFeedback())[1]
    declared.KNOWN_MODELS.clear()
    QgsProject.instance().removeAllMapLayers()


def test_processing_suggest_algorithm(use_backend, backend_server, backend_outputs, tmp_path,
                                      qgis_app):
    """Suggestions through Processing: the squares come back as a polygon layer to load,
    ranked, with the classes the model hesitates between."""
    from gfm_plugin.processing.algorithms import SuggestAlgorithm

    layer = QgsRasterLayer(str(backend_outputs / "scene.tif"), "scene")
    QgsProject.instance().addMapLayer(layer)
    out = tmp_path / "next.gpkg"
    alg = SuggestAlgorithm()
    alg.initAlgorithm()
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    results, ok = alg.run({"INPUT": layer.id(), "MODEL": str(backend_outputs / "model"),
                           "COUNT": 4, "CELL": 32, "DEVICE": 1, "OUTPUT": str(out)},
                          context, QgsProcessingFeedback())
    assert ok, results
    suggestions = QgsVectorLayer(results["SUGGESTIONS"], "s", "ogr")
    details = context.layersToLoadOnCompletion()[results["SUGGESTIONS"]]
    assert details.name == "suggestions (scene)"
    details.postProcessor().postProcessLayer(suggestions, context, QgsProcessingFeedback())
    assert suggestions.labelsEnabled()  # ranked orange outlines, as in the dock
    assert suggestions.isValid() and 1 <= suggestions.featureCount() <= 4
    assert {"rank", "score", "hesitates"} <= set(suggestions.fields().names())
    assert suggestions.crs() == layer.crs()
    QgsProject.instance().removeAllMapLayers()


def test_error_paths_show_messages(iface, use_backend, backend_outputs):
    from gfm_plugin.controller import GfmController
    from gfm_plugin.dock import GfmDock
    from gfm_plugin.settings import BackendSettings

    dock = GfmDock()
    down = GfmController(iface, dock)
    down.settings = BackendSettings(mode="remote", url="http://127.0.0.1:9", token="x")
    assert not down.connect(start=False)
    assert "not reachable" in dock.status.text()

    # a running backend that refuses our token is not "connected"
    refused = GfmController(iface, GfmDock())
    info = json.loads((Path(use_backend.state_dir) / "server.json").read_text())
    refused.settings = BackendSettings(mode="remote", url=info["url"], token="wrong-token")
    assert not refused.connect(start=False)
    status = refused.dock.status.text()
    assert "connected" not in status.replace("not connected", "") and "token" in status, status

    plugin = GfmController(iface, GfmDock())
    plugin.settings = use_backend
    raster = QgsRasterLayer(str(backend_outputs / "scene.tif"), "scene")
    QgsProject.instance().addMapLayer(raster)
    plugin.dock.raster_combo.setLayer(raster)
    labels = plugin.new_labels_layer()
    assert plugin.finetune_current() is None
    assert any("no labels drawn" in m for m in messages(iface))
    memory = QgsVectorLayer("Polygon?crs=EPSG:32633&field=class:string", "scratch", "memory")
    QgsProject.instance().addMapLayer(memory)
    f = QgsFeature(memory.fields())
    f.setGeometry(next(QgsVectorLayer(str(backend_outputs / "labels.gpkg"), "l", "ogr")
                       .getFeatures()).geometry())
    f["class"] = "water"
    memory.dataProvider().addFeatures([f])
    plugin.dock.labels_combo.setLayer(memory)
    assert plugin.finetune_current() is None
    assert any("saved as files" in m for m in messages(iface))
    with pytest.raises(BackendError, match="not reachable"):
        from gfm_plugin.client import BackendClient, Connection

        BackendClient(Connection("http://127.0.0.1:9")).health()
    QgsProject.instance().removeAllMapLayers()
    assert labels is not None


def test_demo_script_saves_project_and_map(backend_outputs, tmp_path):
    """`make demo`'s QGIS step: Classify layer through the plugin, demo.qgz and map.png."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    demo = tmp_path / "demo"
    demo.mkdir()
    for name in ("scene.tif", "labels.gpkg"):
        shutil.copy(backend_outputs / name, demo / name)
    shutil.copytree(backend_outputs / "model", demo / "model")
    proc = subprocess.run([sys.executable, str(repo / "scripts" / "qgis_demo.py"), str(demo),
                           str(repo / ".venv" / "bin" / "python")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["layers"] == ["polygons", "classes", "confidence"]
    assert (demo / "demo.qgz").stat().st_size > 1000
    assert (demo / "map.png").stat().st_size > 10_000


class Feedback(QgsProcessingFeedback):
    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def reportError(self, error, fatalError=False):  # noqa: N802, N803 (QGIS API)
        self.errors.append(error)


def run_alg(alg_cls, params: dict, expect_ok: bool = True) -> tuple[dict, list[str]]:
    alg = alg_cls()
    alg.initAlgorithm()
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = Feedback()
    results, ok = alg.run(params, context, feedback)
    assert ok == expect_ok, (results, feedback.errors)
    return results, feedback.errors


def test_processing_geopile_pretrain_export(use_backend, backend_outputs, tmp_path):
    """The other algorithms, each through the backend: a GeoPile from a folder, a short
    continual pretraining run on it, and an ONNX export of a model package."""
    import shutil

    from gfm_plugin.processing.algorithms import (
        ExportAlgorithm,
        GeopileAlgorithm,
        PretrainAlgorithm,
    )

    src = tmp_path / "imagery"
    src.mkdir()
    shutil.copy(backend_outputs / "scene.tif", src / "scene.tif")
    pile, _ = run_alg(GeopileAlgorithm, {"SRC_FOLDER": str(src), "CHIP": 64,
                                         "OUTPUT": str(tmp_path / "pile")})
    assert (tmp_path / "pile" / "pile.json").exists()
    _, errors = run_alg(PretrainAlgorithm, {"PILE_DIR": pile["PILE"], "CONFIG": 1, "EPOCHS": 1,
                                            "BATCH": 2, "OUTPUT": str(tmp_path / "run")},
                        expect_ok=False)
    assert any("64 px" in e for e in errors), errors  # the backend's message reaches the user
    pile192, _ = run_alg(GeopileAlgorithm, {"SRC_FOLDER": str(src), "CHIP": 192,
                                            "OUTPUT": str(tmp_path / "pile192")})
    out, _ = run_alg(PretrainAlgorithm, {"PILE_DIR": pile192["PILE"], "CONFIG": 1, "EPOCHS": 1,
                                         "BATCH": 1, "OUTPUT": str(tmp_path / "run")})
    assert (tmp_path / "run" / "encoder.safetensors").exists() and out["RUN"]
    model = tmp_path / "model"
    shutil.copytree(backend_outputs / "model", model)
    run_alg(ExportAlgorithm, {"MODEL_DIR": str(model)})
    assert (model / "model.onnx").stat().st_size > 10_000


def test_cancel_stops_the_backend_job(plugin, backend_outputs, tmp_path):
    """Cancelling the QgsTask cancels the job on the backend; no results are added."""
    from osgeo import gdal

    big = tmp_path / "big.tif"  # large enough to still be running when cancelled
    gdal.Translate(str(big), str(backend_outputs / "scene.tif"), width=2048, height=2048)
    layer = QgsRasterLayer(str(big), "big")
    QgsProject.instance().addMapLayer(layer)
    plugin.connect()
    plugin.dock.raster_combo.setLayer(layer)
    task = plugin.classify_current()
    ended: list[str] = []  # QGIS shows "Task failed" for a terminated task
    task.taskCompleted.connect(lambda: ended.append("completed"))
    task.taskTerminated.connect(lambda: ended.append("terminated"))
    deadline = time.monotonic() + 120
    while not task.job_id or task.info.get("state") != "running":
        QgsApplication.processEvents()
        time.sleep(0.05)
        assert time.monotonic() < deadline
    task.cancel()
    wait_for(task)
    job = plugin.client.job(task.job_id)
    assert job["state"] == "cancelled"
    assert ended == ["completed"]  # cancelled as asked: QGIS says no "Task failed"
    assert QgsProject.instance().layerTreeRoot().findGroup("big") is None


def test_layer_without_a_file_is_exported_first(plugin, backend_outputs, iface):
    from osgeo import gdal

    gdal.Translate("/vsimem/scene.tif", str(backend_outputs / "scene.tif"))
    layer = QgsRasterLayer("/vsimem/scene.tif", "in memory")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(layer.extent())
    plugin.connect()
    plugin.dock.raster_combo.setLayer(layer)
    task = plugin.classify_current()
    assert task is not None and task.params["raster"].endswith(".tif")
    assert task.params["raster"] != "/vsimem/scene.tif"
    wait_for(task)
    assert task.info["state"] == "succeeded", task.error
    assert QgsProject.instance().layerTreeRoot().findGroup("in memory") is not None


def test_a_backend_of_another_version_is_offered_an_upgrade(plugin, iface, monkeypatch):
    import gfm_plugin

    bar = iface.messageBar()
    bar.createMessage.reset_mock()
    assert plugin.connect(start=True)
    assert not bar.createMessage.call_args_list  # same version: nothing to offer
    monkeypatch.setattr(gfm_plugin, "__version__", "9.9.9")
    assert plugin.connect(start=True)
    (call,) = bar.createMessage.call_args_list
    assert "the plugin 9.9.9: set up the backend again to upgrade it" in call.args[1]
    assert bar.pushWidget.called


def test_at_startup_the_dock_connects_and_shows_the_job_history(iface, use_backend, backend_server):
    from gfm_plugin.controller import GfmController
    from gfm_plugin.dock import GfmDock

    client, _ = backend_server
    history = client.jobs()
    controller = GfmController(iface, GfmDock())
    controller.settings = use_backend
    controller.connect_at_startup()  # connects in a QgsTask: let it finish
    deadline = time.monotonic() + 60
    while controller.client is None and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.02)
    assert controller.client is not None and "connected" in controller.dock.status.text()
    assert controller.dock.jobs.topLevelItemCount() == len(history)


def test_a_dead_connection_is_replaced_by_the_backend_in_server_json(plugin):
    from gfm_plugin.client import BackendClient, Connection

    assert plugin.connect(start=False)
    live = plugin.client.connection.url
    plugin.client = BackendClient(Connection("http://127.0.0.1:9", "old-token"), timeout=2)
    assert plugin._client() is not None and plugin.client.connection.url == live


def test_class_names_and_validation_scores_read_as_meant():
    from gfm_plugin.controller import _iou_text
    from gfm_plugin.layers import typed_class_names as _class_names

    assert _class_names("Building, Hydro,, Road ,Building") == ["Building", "Hydro", "Road"]
    assert _class_names(" , ") == []
    info = {"outputs": {"validation": {"iou": {"Building": 0.8123, "Road": None}}}}
    assert _iou_text(info) == "Building 0.81, Road n/a (no validation polygons)"


def test_connect_runs_off_the_gui_thread(plugin):
    task = plugin.connect_in_background()
    assert "starting" in plugin.dock.status.text()
    deadline = time.monotonic() + 60
    while plugin.client is None and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.02)
    assert plugin.client is not None and "connected" in plugin.dock.status.text()
    assert task.status_text.startswith("connected")


def test_a_web_mercator_layer_that_is_no_file_is_exported_at_the_models_gsd(plugin, iface,
                                                                           backend_outputs, tmp_path):
    """The common basemap case: EPSG:3857 tiles shown at screen resolution; the model wants
    0.5 m on the ground, which at this latitude is 0.5 / cos(lat) Mercator units."""
    import math
    import zipfile

    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsPointXY

    merc = tmp_path / "basemap.tif"
    subprocess.run(["gdalwarp", "-q", "-t_srs", "EPSG:3857", str(backend_outputs / "scene.tif"),
                    str(merc)], check=True)
    with zipfile.ZipFile(tmp_path / "basemap.zip", "w") as zf:
        zf.write(merc, "basemap.tif")
    layer = QgsRasterLayer(f"/vsizip/{tmp_path / 'basemap.zip'}/basemap.tif", "basemap", "gdal")
    assert layer.isValid() and layers.raster_file_path(layer) is None  # not a plain file
    QgsProject.instance().addMapLayer(layer)
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(layer.extent())
    assert plugin.connect(start=False)
    model = plugin.dock.current_model()
    assert model["model"]["gsd_m"] == 0.5
    path = plugin._export_visible(layer, model)
    exported = QgsRasterLayer(path, "exported")
    wgs = QgsCoordinateTransform(layer.crs(), QgsCoordinateReferenceSystem("EPSG:4326"),
                                 QgsProject.instance())
    lat = wgs.transform(QgsPointXY(layer.extent().center())).y()
    assert exported.crs().authid() == "EPSG:3857"
    # 0.5 / cos(lat) on the sphere; measured on the WGS 84 ellipsoid it is 0.35 % less here
    assert exported.rasterUnitsPerPixelX() == pytest.approx(0.5 / math.cos(math.radians(lat)), rel=5e-3)
    assert "exported at 0.5 m, the model's ground sample distance" in messages(iface)[-1]

    plugin.dock.raster_combo.setLayer(layer)
    task = plugin.classify_current()
    wait_for(task)
    group = QgsProject.instance().layerTreeRoot().findGroup("basemap")
    assert group is not None and [n.layer().name() for n in group.findLayers()][:2] == [
        "polygons", "classes"]
