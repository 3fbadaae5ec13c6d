"""The demo's last step, in QGIS's own Python: Classify layer through the plugin's code.

Usage: /usr/bin/python3 scripts/qgis_demo.py DEMO_DIR BACKEND_PYTHON

Loads DEMO_DIR/scene.tif in a headless QGIS, starts a local backend the way the plugin
does, runs the dock's Classify layer action with DEMO_DIR/model, and saves
DEMO_DIR/demo.qgz (styled result layers) and DEMO_DIR/map.png (rendered by QGIS).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _controller(demo_dir: Path, backend_python: str):
    """A controller with the plugin's dock, its backend state kept inside DEMO_DIR."""
    from qgis.testing.mocked import get_iface

    from gfm_plugin.controller import GfmController
    from gfm_plugin.dock import GfmDock
    from gfm_plugin.settings import BackendSettings

    state = demo_dir / "qgis-backend"
    models = state / "models"
    if (models / "demo-tiny").exists():  # the demo's own copy from an earlier run
        shutil.rmtree(models / "demo-tiny")
    shutil.copytree(demo_dir / "model", models / "demo-tiny")
    controller = GfmController(get_iface(), GfmDock())
    controller.settings = BackendSettings(mode="local", python=backend_python,
                                          state_dir=str(state), models_dir=str(models),
                                          results_dir=str(demo_dir / "qgis-results"))
    return controller


def _wait(task, minutes: int = 10) -> str | None:
    """Run QGIS's event loop until the task ends; the reason it failed, or None."""
    from qgis.core import QgsApplication, QgsTask

    deadline = time.monotonic() + minutes * 60
    while task.status() not in (QgsTask.Complete, QgsTask.Terminated):
        QgsApplication.processEvents()
        time.sleep(0.05)
        if time.monotonic() > deadline:
            return f"classify did not finish in {minutes} minutes"
    for _ in range(20):
        QgsApplication.processEvents()
    if task.info.get("state") != "succeeded":
        return f"classify failed: {task.error}"
    return None


def _style(classes, labels) -> None:
    """The imagery shows through the classes; the drawn labels are yellow outlines."""
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtGui import QColor

    classes.renderer().setOpacity(0.65)
    outline = labels.renderer().symbol().symbolLayer(0)
    outline.setBrushStyle(Qt.NoBrush)
    outline.setStrokeColor(QColor("yellow"))
    outline.setStrokeWidth(0.6)


def _render(layers: list, extent_layer, path: Path) -> None:
    """Render the layers as QGIS draws them, 900 x 900 px, into a PNG."""
    from qgis.core import QgsMapRendererParallelJob, QgsMapSettings
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(extent_layer.crs())
    settings.setExtent(extent_layer.extent())
    settings.setOutputSize(QSize(900, 900))
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    job.renderedImage().save(str(path))


def _stop_backend(state: Path) -> None:
    """Stop the backend the controller started (its whole process group)."""
    info_path = state / "server.json"
    if info_path.exists():
        pid = json.loads(info_path.read_text())["pid"]
        try:
            os.killpg(os.getpgid(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass


def main(demo_dir: Path, backend_python: str) -> int:
    from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
    from qgis.testing import start_app

    start_app()
    controller = _controller(demo_dir, backend_python)
    project = QgsProject.instance()
    project.setFileName(str(demo_dir / "demo.qgz"))
    try:
        if not controller.connect(start=True):
            print(f"backend: {controller.dock.status.text()}", file=sys.stderr)
            return 1
        scene = QgsRasterLayer(str(demo_dir / "scene.tif"), "scene")
        labels = QgsVectorLayer(f"{demo_dir / 'labels.gpkg'}|layername=labels", "drawn labels", "ogr")
        project.addMapLayer(scene)
        project.addMapLayer(labels)
        controller.dock.raster_combo.setLayer(scene)
        failure = _wait(controller.classify_current())
        if failure:
            print(failure, file=sys.stderr)
            return 1
        group = project.layerTreeRoot().findGroup("scene")
        classes = next(n.layer() for n in group.findLayers() if n.layer().name() == "classes")
        _style(classes, labels)
        project.write()
        _render([labels, classes, scene], scene, demo_dir / "map.png")
        print(json.dumps({"project": str(demo_dir / "demo.qgz"), "map": str(demo_dir / "map.png"),
                          "layers": [n.layer().name() for n in group.findLayers()]}))
        return 0
    finally:
        _stop_backend(demo_dir / "qgis-backend")


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve(), sys.argv[2]))
