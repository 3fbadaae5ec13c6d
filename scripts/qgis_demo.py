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


def main(demo_dir: Path, backend_python: str) -> int:
    from qgis.core import (
        QgsApplication,
        QgsMapRendererParallelJob,
        QgsMapSettings,
        QgsProject,
        QgsRasterLayer,
        QgsTask,
        QgsVectorLayer,
    )
    from qgis.PyQt.QtCore import QSize, Qt
    from qgis.PyQt.QtGui import QColor
    from qgis.testing import start_app
    from qgis.testing.mocked import get_iface

    from gfm_plugin.controller import GfmController
    from gfm_plugin.dock import GfmDock
    from gfm_plugin.settings import BackendSettings

    start_app()
    iface = get_iface()
    state = demo_dir / "qgis-backend"
    models = state / "models"
    if (models / "demo-tiny").exists():
        shutil.rmtree(models / "demo-tiny")
    shutil.copytree(demo_dir / "model", models / "demo-tiny")
    controller = GfmController(iface, GfmDock())
    controller.settings = BackendSettings(mode="local", python=backend_python,
                                          state_dir=str(state), models_dir=str(models),
                                          results_dir=str(demo_dir / "qgis-results"))
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
        task = controller.classify_current()
        deadline = time.monotonic() + 600
        while task.status() not in (QgsTask.Complete, QgsTask.Terminated):
            QgsApplication.processEvents()
            time.sleep(0.05)
            if time.monotonic() > deadline:
                print("classify did not finish in 10 minutes", file=sys.stderr)
                return 1
        for _ in range(20):
            QgsApplication.processEvents()
        if task.info.get("state") != "succeeded":
            print(f"classify failed: {task.error}", file=sys.stderr)
            return 1
        group = project.layerTreeRoot().findGroup("scene")
        classes = next(n.layer() for n in group.findLayers() if n.layer().name() == "classes")
        classes.renderer().setOpacity(0.65)  # the imagery shows through the classes
        outline = labels.renderer().symbol().symbolLayer(0)
        outline.setBrushStyle(Qt.NoBrush)
        outline.setStrokeColor(QColor("yellow"))
        outline.setStrokeWidth(0.6)
        project.write()
        settings = QgsMapSettings()
        settings.setLayers([labels, classes, scene])
        settings.setDestinationCrs(scene.crs())
        settings.setExtent(scene.extent())
        settings.setOutputSize(QSize(900, 900))
        settings.setBackgroundColor(QColor("white"))
        job = QgsMapRendererParallelJob(settings)
        job.start()
        job.waitForFinished()
        job.renderedImage().save(str(demo_dir / "map.png"))
        print(json.dumps({"project": str(demo_dir / "demo.qgz"), "map": str(demo_dir / "map.png"),
                          "layers": [n.layer().name() for n in group.findLayers()]}))
        return 0
    finally:
        info_path = state / "server.json"
        if info_path.exists():
            pid = json.loads(info_path.read_text())["pid"]
            try:
                os.killpg(os.getpgid(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve(), sys.argv[2]))
