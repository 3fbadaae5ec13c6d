"""Runs inside the real QGIS desktop (`qgis --code desktop_driver.py`) under Xvfb: drives
the GFM dock as an analyst would, takes screenshots and writes what it found to a JSON
file that `test_desktop.py` checks. Configured by the JSON file named in
$GFM_DESKTOP_CONFIG; QGIS is left with `os._exit` once the results are written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
import zipfile
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QPoint, QRect, QTimer
from qgis.PyQt.QtGui import QGuiApplication
from qgis.PyQt.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QComboBox,
    QDockWidget,
    QLineEdit,
    QScrollArea,
    QTreeWidget,
    QWidget,
)
from qgis.utils import iface, plugins

CONFIG = json.loads(Path(os.environ["GFM_DESKTOP_CONFIG"]).read_text())
OUT = Path(CONFIG["out_dir"])
RESULTS: dict = {"steps": []}
CONTROLS = (QAbstractButton, QComboBox, QLineEdit, QAbstractSpinBox, QTreeWidget)


def save() -> None:
    (OUT / "results.json").write_text(json.dumps(RESULTS, indent=1, default=str))


def shot(name: str) -> None:
    QgsApplication.processEvents()
    QGuiApplication.primaryScreen().grabWindow(0).save(str(OUT / f"{name}.png"))
    RESULTS["steps"].append(name)
    save()


def global_rect(widget) -> QRect:
    return QRect(widget.mapToGlobal(widget.rect().topLeft()), widget.size())


def unreachable(dock: QDockWidget, screen: QRect) -> list[str]:
    """Controls of the dock that cannot be brought onto the screen by scrolling the dock."""
    scroll = dock.findChild(QScrollArea)
    viewport = global_rect(scroll.viewport()).intersected(screen)
    missing = []
    for widget in scroll.widget().findChildren(QWidget):
        if not isinstance(widget, CONTROLS) or not widget.isVisibleTo(dock) \
                or isinstance(widget.parent(), QComboBox):  # a combo box's own line edit
            continue
        # the whole widget (ensureWidgetVisible shows only a line edit's cursor)
        top_left = widget.mapTo(scroll.widget(), QPoint(0, 0))
        half_w, half_h = (widget.width() + 1) // 2, (widget.height() + 1) // 2
        scroll.ensureVisible(top_left.x() + half_w, top_left.y() + half_h, half_w, half_h)
        QgsApplication.processEvents()
        rect = global_rect(widget)
        if widget.height() <= viewport.height() and not viewport.contains(rect):
            bar = scroll.verticalScrollBar()
            missing.append(f"{describe(widget)} at {rect.getRect()} outside {viewport.getRect()} "
                           f"(scrolled {bar.value()} of {bar.maximum()}, now "
                           f"{global_rect(scroll.viewport()).getRect()})")
    scroll.verticalScrollBar().setValue(0)
    return missing


def describe(widget) -> str:
    text = widget.text() if isinstance(widget, QAbstractButton) else ""
    if isinstance(widget, QLineEdit):
        text = widget.placeholderText()
    return f"{type(widget).__name__} {text!r}"


def layout_checks(prefix: str) -> None:
    dock = plugins["gfm_plugin"].dock
    screen = QGuiApplication.primaryScreen().geometry()
    RESULTS[f"{prefix}_screen"] = screen.getRect()
    RESULTS[f"{prefix}_dock"] = global_rect(dock).getRect()
    RESULTS[f"{prefix}_dock_on_screen"] = screen.contains(global_rect(dock))
    RESULTS[f"{prefix}_unreachable"] = unreachable(dock, screen)
    bar = iface.mainWindow().statusBar()
    RESULTS[f"{prefix}_status_bar_on_screen"] = bar.isVisible() and screen.contains(global_rect(bar))
    save()


def wait_until(condition, timeout_s: float):
    """Generator step: yields until `condition()` or the timeout; returns the seconds taken."""
    start = time.monotonic()
    while not condition() and time.monotonic() - start < timeout_s:
        yield 0.2
    return time.monotonic() - start if condition() else None


def layout_steps():
    win = iface.mainWindow()
    win.setGeometry(QGuiApplication.primaryScreen().availableGeometry())
    win.showMaximized()
    yield 2.0
    layout_checks("dock")
    shot("dock")
    toolbox = next((d for d in win.findChildren(QDockWidget)
                    if d.objectName() == "ProcessingToolbox"), None)
    RESULTS["toolbox_found"] = toolbox is not None
    if toolbox is not None:
        toolbox.show()
        yield 1.0
        layout_checks("toolbox")
        shot("toolbox")


def status() -> str:
    return plugins["gfm_plugin"].dock.status.text()


def workflow_steps():
    dock = plugins["gfm_plugin"].dock
    controller = plugins["gfm_plugin"].controller
    RESULTS["connected_at_start_s"] = yield from wait_until(lambda: status().startswith("connected"), 60)
    labels = QgsVectorLayer(CONFIG["labels"], "BakerLake-like labels", "ogr")
    QgsProject.instance().addMapLayer(labels)
    dock.labels_combo.setLayer(labels)
    RESULTS["class_field"] = dock.field_combo.currentField()
    shot("connected")
    server = json.loads((Path(CONFIG["state_dir"]) / "server.json").read_text())
    os.kill(server["pid"], signal.SIGTERM)
    RESULTS["red_after_kill_s"] = yield from wait_until(
        lambda: "b00020" in dock.status.styleSheet(), 20)
    RESULTS["status_after_kill"] = status()
    shot("backend_stopped")
    subprocess.Popen([CONFIG["python"], "-m", "gfm_backend.cli", "serve", "--port", "0",
                      "--state-dir", CONFIG["state_dir"]], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    RESULTS["recovered_s"] = yield from wait_until(lambda: status().startswith("connected"), 60)
    shot("backend_restarted")
    yield from processing_steps()
    yield from web_mercator_steps(controller, dock)
    yield from suggest_steps(controller, dock, "scene")
    yield from change_steps(dock)


def suggest_steps(controller, dock, scene_name: str, prefix: str = "suggest"):
    """Suggest where to label on the scene, the first place shown, then the next one."""
    scene = next(la for la in QgsProject.instance().mapLayers().values()
                 if la.name() == scene_name)
    dock.raster_combo.setLayer(scene)
    iface.mapCanvas().setDestinationCrs(scene.crs())
    labels = next((la for la in QgsProject.instance().mapLayers().values()
                   if la.name() == "BakerLake-like labels"), None)
    if labels is not None:
        dock.labels_combo.setLayer(labels)
    dock.suggest_row.count_spin.setValue(5)
    dock.findChild(QScrollArea).ensureWidgetVisible(dock.suggest_row)
    controller.suggest.layer = None
    task = controller.suggest.suggest()
    RESULTS[f"{prefix}_params"] = dict(task.params) if task is not None else None
    RESULTS[f"{prefix}_s"] = yield from wait_until(lambda: controller.suggest.layer is not None, 180)
    layer = controller.suggest.layer
    yield 2.0
    RESULTS[f"{prefix}_count"] = layer.featureCount() if layer else 0
    RESULTS[f"{prefix}_position"] = dock.suggest_row.position.text()
    RESULTS[f"{prefix}_source"] = layer.source() if layer else None
    if layer is not None and controller.suggest.ids:
        first = layer.getFeature(controller.suggest.ids[0]).geometry().boundingBox()
        RESULTS[f"{prefix}_first_in_view"] = iface.mapCanvas().extent().contains(first)
    shot(f"{prefix}_first")
    dock.suggest_row.next_button.click()
    yield 2.0
    RESULTS[f"{prefix}_position_next"] = dock.suggest_row.position.text()
    shot(f"{prefix}_next")


def change_steps(dock):
    """Two dates, the Detect changes group unfolded, detection from the later date's
    context-menu action; the styled group named after the pair."""
    plugin = plugins["gfm_plugin"]
    before = QgsRasterLayer(CONFIG["before"], "before")
    after = QgsRasterLayer(CONFIG["after"], "after")
    QgsProject.instance().addMapLayers([before, after])
    iface.mapCanvas().setDestinationCrs(before.crs())
    iface.mapCanvas().setExtent(before.extent())
    box = dock.change
    box.setCollapsed(False)
    box.before_combo.setLayer(before)
    plugin.controller.refresh_models()
    RESULTS["change_models"] = [box.model_combo.itemText(i) for i in range(box.model_combo.count())]
    yield 1.0
    layout_checks("change")
    dock.findChild(QScrollArea).ensureWidgetVisible(box.detect_button)
    shot("change_group")
    iface.setActiveLayer(after)
    action = next(a for a in plugin.layer_actions if a.text().startswith("Detect changes"))
    action.trigger()
    RESULTS["change_detected_s"] = yield from wait_until(
        lambda: QgsProject.instance().layerTreeRoot().findGroup("before → after") is not None, 180)
    group = QgsProject.instance().layerTreeRoot().findGroup("before → after")
    RESULTS["change_layers"] = [n.layer().name() for n in group.findLayers()] if group else []
    root = QgsProject.instance().layerTreeRoot()
    for node in root.children():  # the pair's result over the later image, nothing else
        node.setItemVisibilityChecked(node is group or node is root.findLayer(after.id()))
    yield 2.0
    shot("change_detected")


def processing_steps():
    import processing

    scene = QgsRasterLayer(CONFIG["scene"], "scene")
    QgsProject.instance().addMapLayer(scene)
    before = len(QgsProject.instance().mapLayers())
    processing.runAndLoadResults("gfm:classify", {
        "INPUT": scene.id(), "MODEL": CONFIG["model"], "DEVICE": 1,
        "OUTPUT": str(OUT / "processing-out")})
    yield 1.0
    names = sorted(la.name() for la in QgsProject.instance().mapLayers().values())
    RESULTS["processing_added"] = len(QgsProject.instance().mapLayers()) - before
    RESULTS["layer_names"] = names
    shot("processing_classify")
    plugins["gfm_plugin"].controller.check_backend()
    jobs = dock_jobs()
    RESULTS["processing_job_in_list"] = any(t.startswith("classify processing-out") for t, _ in jobs)


def dock_jobs() -> list[tuple[str, str]]:
    tree = plugins["gfm_plugin"].dock.jobs
    return [(tree.topLevelItem(i).text(0), tree.topLevelItem(i).text(1))
            for i in range(tree.topLevelItemCount())]


def web_mercator_steps(controller, dock):
    """A basemap that is no file, in EPSG:3857, over a model at 0.5 m."""
    with zipfile.ZipFile(OUT / "basemap.zip", "w") as zf:
        zf.write(CONFIG["mercator"], "basemap.tif")
    layer = QgsRasterLayer(f"/vsizip/{OUT / 'basemap.zip'}/basemap.tif", "basemap", "gdal")
    QgsProject.instance().addMapLayer(layer)
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(layer.extent())
    canvas.refresh()
    yield 1.0
    dock.raster_combo.setLayer(layer)
    index = next(i for i in range(dock.model_combo.count())
                 if dock.model_combo.itemData(i).get("name") == CONFIG["model"])
    dock.model_combo.setCurrentIndex(index)
    task = controller.classify_current()
    RESULTS["webmercator_raster"] = task.params["raster"] if task is not None else None
    done = yield from wait_until(lambda: QgsProject.instance().layerTreeRoot().findGroup("basemap")
                                 is not None, 180)
    RESULTS["webmercator_classified_s"] = done
    from osgeo import gdal

    exported = gdal.Open(RESULTS["webmercator_raster"])
    RESULTS["webmercator_pixel"] = exported.GetGeoTransform()[1]
    RESULTS["webmercator_crs"] = QgsRasterLayer(RESULTS["webmercator_raster"], "x").crs().authid()
    RESULTS["jobs"] = dock_jobs()
    shot("webmercator_classified")
    jobs = dock.jobs
    jobs.setCurrentItem(jobs.topLevelItem(0))
    yield 1.0
    RESULTS["report"] = dock.report.text.text()
    dock.findChild(QScrollArea).ensureWidgetVisible(dock.report)
    shot("report")


def run(steps) -> None:
    def step() -> None:
        try:
            delay = next(steps)
        except StopIteration:
            finish()
            return
        except Exception:
            RESULTS["error"] = traceback.format_exc()
            finish()
            return
        QTimer.singleShot(int(1000 * (delay or 0)), step)

    QTimer.singleShot(3000, step)


def remote_steps():
    """Classify a raster that exists only on this side, through URL + token."""
    from gfm_plugin.settings import BackendSettings

    plugin = plugins["gfm_plugin"]
    plugin.controller.settings = BackendSettings(
        mode="remote", url=CONFIG["url"], token=CONFIG["token"], results_dir=str(OUT / "client"))
    plugin.controller.client = None
    plugin.controller.connect_in_background(start=False)
    RESULTS["remote_connected_s"] = yield from wait_until(
        lambda: status().startswith("connected"), 30)
    layer = QgsRasterLayer(CONFIG["scene"], "client scene")
    QgsProject.instance().addMapLayer(layer)
    iface.mapCanvas().setExtent(layer.extent())
    dock = plugin.dock
    dock.raster_combo.setLayer(layer)
    task = plugin.controller.classify_current()
    params = task.params if task else {}  # the task's own dict: the upload's id lands in it
    RESULTS["remote_classified_s"] = yield from wait_until(
        lambda: QgsProject.instance().layerTreeRoot().findGroup("client scene") is not None, 180)
    RESULTS["remote_params_raster"] = params.get("raster")
    group = QgsProject.instance().layerTreeRoot().findGroup("client scene")
    RESULTS["remote_sources"] = [n.layer().source() for n in group.findLayers()] if group else []
    RESULTS["remote_status"] = status()
    yield 1.0
    shot("remote_classified")
    yield from suggest_steps(plugin.controller, dock, "client scene", prefix="remote_suggest")


def all_steps():
    yield from layout_steps()
    if CONFIG.get("workflow"):
        yield from workflow_steps()
    if CONFIG.get("remote"):
        yield from remote_steps()


def finish() -> None:
    RESULTS["finished"] = True
    save()
    sys.stdout.flush()
    os._exit(0)


run(all_steps())
