"""Plugin tests run in QGIS's own Python (/usr/bin/python3) with a headless QgsApplication."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

qgis_core = pytest.importorskip("qgis.core")


@pytest.fixture(scope="session")
def qgis_app():
    from qgis.testing import start_app

    return start_app(cleanup=False)


@pytest.fixture
def iface(qgis_app):
    from qgis.testing.mocked import get_iface

    return get_iface()


VENV_PY = REPO / ".venv" / "bin" / "python"

BACKEND_SCRIPT = """
import sys
from pathlib import Path
from gfm_backend.data.synthetic import make_scene, write_scene, draw_training_polygons, write_polygons
from gfm_backend.tasks.finetune import FinetuneParams, finetune
from gfm_backend.tasks.classify import ClassifyParams, classify
root = Path(sys.argv[1])
scene = make_scene(size=256, seed=11)
raster = write_scene(scene, root / "scene.tif")
geoms, names = draw_training_polygons(scene, per_class=3, box_px=24, seed=5)
labels = write_polygons(root / "labels.gpkg", geoms, names, scene.crs)
finetune(FinetuneParams([raster], labels, "class", root / "model", config="tiny", device="cpu",
                        epochs=1, chips=8, batch_size=4, onnx=False))
classify(ClassifyParams(raster, root / "model", root / "classified", device="cpu"))
from gfm_backend.data.synthetic_change import make_change_pair, patch_polygons, write_pair
from gfm_backend.tasks.change_finetune import finetune_change
from gfm_backend.tasks.params import FinetuneChangeParams
pair = make_change_pair(256, count=8, patch_px=32)
before, after = write_pair(pair, root)
geoms, kinds = patch_polygons(pair)
changes = write_polygons(root / "changes.gpkg", geoms, kinds, pair.before.crs)
finetune_change(FinetuneChangeParams(before, after, labels=changes, class_field="class",
                                     out=root / "change-model", config="tiny", device="cpu",
                                     epochs=1, chips=8, batch_size=4, onnx=False))
"""


@pytest.fixture(scope="session")
def backend_outputs(tmp_path_factory) -> Path:
    """A scene, a model and classify outputs made by the real backend in its own venv; a
    synthetic change pair (before.tif, after.tif, changes.gpkg) and a change model."""
    import subprocess

    if not VENV_PY.exists():
        pytest.skip("backend virtual environment missing (run make setup)")
    root = tmp_path_factory.mktemp("backend")
    subprocess.run([str(VENV_PY), "-c", BACKEND_SCRIPT, str(root)], check=True, timeout=600,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return root


@pytest.fixture(scope="session")
def backend_server(tmp_path_factory, backend_outputs, qgis_app):
    """A real `gfm serve`, started by the plugin's own code, with the test model in its
    models folder; stopped (its whole process group) at the end."""
    import json
    import shutil
    import signal

    from gfm_plugin.backend_process import start_local

    state = tmp_path_factory.mktemp("state")
    shutil.copytree(backend_outputs / "model", state / "models" / "scene-model")
    shutil.copytree(backend_outputs / "change-model", state / "models" / "change-model")
    client = start_local(str(VENV_PY), str(state), timeout_s=120)
    yield client, state
    info = json.loads((state / "server.json").read_text())
    try:
        os.killpg(os.getpgid(info["pid"]), signal.SIGTERM)
    except ProcessLookupError:
        pass


@pytest.fixture
def use_backend(backend_server):
    """QGIS settings pointing the plugin at the test backend (restored afterwards)."""
    from gfm_plugin.settings import BackendSettings

    client, state = backend_server
    before = BackendSettings.load()
    settings = BackendSettings(mode="local", python=str(VENV_PY), state_dir=str(state),
                               models_dir=str(state / "models"),
                               results_dir=str(state / "outputs"))
    settings.save()
    yield settings
    before.save()


@pytest.fixture
def plugin(iface, use_backend):
    from gfm_plugin.controller import GfmController
    from gfm_plugin.dock import GfmDock

    dock = GfmDock()
    controller = GfmController(iface, dock)
    controller.settings = use_backend
    controller.show_outputs_folder()
    yield controller
    project = qgis_core.QgsProject.instance()
    project.removeAllMapLayers()
    project.layerTreeRoot().removeAllChildren()
