"""The plugin in the real QGIS desktop under Xvfb, at 1600 x 1000 and 1280 x 800: every dock
control can be reached, the class field defaults to `class`, the status turns red when the
backend stops and recovers when it is back, Processing's Classify adds its layers, and a
basemap that is no file (EPSG:3857) is exported at the model's 0.5 m and classified.

The screenshots of each state are kept in pytest's temporary folder (never in the
repository); set GFM_DESKTOP_SHOTS=DIR to keep a copy."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_PY = REPO / ".venv" / "bin" / "python"

pytestmark = pytest.mark.skipif(not (shutil.which("qgis") and shutil.which("xvfb-run")),
                                reason="the QGIS desktop (Debian's qgis) and xvfb-run are needed")
DRIVER = Path(__file__).with_name("desktop_driver.py")


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory) -> Path:
    """The plugin as users install it: the zip the build makes."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_plugin.py"), str(out)],
                   check=True, capture_output=True)
    return next(out.glob("gfm_plugin-*.zip"))


def _profile(root: Path, state: Path, results: Path, plugin: Path) -> Path:
    """A fresh QGIS profile with the plugin unzipped and enabled, pointed at the backend."""
    profiles = root / "profiles"
    plugins = profiles / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(plugin) as zf:
        zf.extractall(plugins)
    ini = profiles / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[PythonPlugins]\ngfm_plugin=true\n\n[gfm]\nmode=local\n"
                   f"python={VENV_PY}\nstate_dir={state}\nresults_dir={results}\n\n"
                   "[qgis]\nshowTips322=false\ncheckVersion=false\n")
    return profiles


def _run_desktop(tmp: Path, size: str, plugin: Path, config: dict, timeout_s: int = 420) -> dict:
    out = tmp / f"shots-{size}"
    out.mkdir()
    profiles = _profile(tmp / f"qgis-{size}", Path(config["state_dir"]), tmp / "outputs", plugin)
    config = config | {"out_dir": str(out)}
    (tmp / f"config-{size}.json").write_text(json.dumps(config))
    env = {**os.environ, "GFM_DESKTOP_CONFIG": str(tmp / f"config-{size}.json"),
           "QT_QPA_PLATFORM": "xcb", "HF_HUB_OFFLINE": "1"}
    log = subprocess.run(
        ["xvfb-run", "-a", "-s", f"-screen 0 {size}x24", "qgis", "--profiles-path", str(profiles.parent),
         "--nologo", "--noversioncheck", "--code", str(DRIVER)],
        env=env, capture_output=True, text=True, timeout=timeout_s)
    keep = os.environ.get("GFM_DESKTOP_SHOTS")
    if keep:
        shutil.copytree(out, Path(keep) / out.name, dirs_exist_ok=True)
    results_file = out / "results.json"
    assert results_file.exists(), log.stdout[-3000:] + log.stderr[-3000:]
    results = json.loads(results_file.read_text())
    assert results.get("finished") and "error" not in results, results.get("error")
    return results


@pytest.fixture
def desktop_backend(tmp_path, backend_outputs):
    """A backend of its own (the test stops and restarts it), with the scene model."""
    from gfm_plugin.backend_process import start_local

    state = tmp_path / "state"
    shutil.copytree(backend_outputs / "model", state / "models" / "scene-model")
    shutil.copytree(backend_outputs / "change-model", state / "models" / "change-model")
    start_local(str(VENV_PY), str(state), timeout_s=120)
    yield state
    try:
        pid = json.loads((state / "server.json").read_text())["pid"]
        os.killpg(os.getpgid(pid), signal.SIGTERM)
    except (OSError, ValueError, KeyError):
        pass


def _layout_ok(results: dict, prefix: str) -> None:
    assert results[f"{prefix}_dock_on_screen"], results[f"{prefix}_dock"]
    # narrow enough to leave the map and the Layers panel room on a laptop's screen
    assert results[f"{prefix}_dock"][2] <= 0.3 * results[f"{prefix}_screen"][2]
    assert results[f"{prefix}_unreachable"] == []
    assert results[f"{prefix}_status_bar_on_screen"]


def test_the_dock_fits_a_1600x1000_screen_beside_the_processing_toolbox(tmp_path, plugin_zip):
    results = _run_desktop(tmp_path, "1600x1000", plugin_zip,
                           {"state_dir": str(tmp_path / "no-backend")})
    _layout_ok(results, "dock")
    assert results["toolbox_found"]
    _layout_ok(results, "toolbox")


def test_an_analysts_session_on_a_1280x800_screen(tmp_path, plugin_zip, backend_outputs,
                                                  desktop_backend):
    mercator = tmp_path / "basemap.tif"
    subprocess.run(["gdalwarp", "-q", "-t_srs", "EPSG:3857", str(backend_outputs / "scene.tif"),
                    str(mercator)], check=True)
    results = _run_desktop(tmp_path, "1280x800", plugin_zip, {
        "workflow": True, "state_dir": str(desktop_backend), "python": str(VENV_PY),
        "scene": str(backend_outputs / "scene.tif"), "labels": str(backend_outputs / "labels.gpkg"),
        "model": "scene-model", "mercator": str(mercator),
        "before": str(backend_outputs / "before.tif"), "after": str(backend_outputs / "after.tif")})
    _layout_ok(results, "dock")
    _layout_ok(results, "toolbox")
    assert results["connected_at_start_s"] is not None  # a known backend: connected by itself
    assert results["class_field"] == "class"
    assert results["red_after_kill_s"] is not None and results["red_after_kill_s"] < 10
    assert results["recovered_s"] is not None
    assert results["processing_added"] == 3
    assert {"classes (scene)", "confidence (scene)", "polygons (scene)"} <= set(results["layer_names"])
    assert results["processing_job_in_list"]
    assert results["webmercator_classified_s"] is not None
    assert results["webmercator_crs"] == "EPSG:3857"
    from osgeo import gdal

    merc = gdal.Open(str(mercator))
    x0, dx, _, y0, _, dy = merc.GetGeoTransform()
    y = y0 + dy * merc.RasterYSize / 2  # the latitude of the middle, from Mercator's y
    lat = math.degrees(math.atan(math.sinh(y / 6378137.0)))
    assert results["webmercator_pixel"] == pytest.approx(0.5 / math.cos(math.radians(lat)), rel=5e-3)
    assert "classify" in " ".join(t for t, _ in results["jobs"])
    assert "classify</b> succeeded" in results["report"] and " ha" in results["report"]
    assert results["suggest_s"] is not None and 1 <= results["suggest_count"] <= 5
    assert results["suggest_position"].startswith(f"1/{results['suggest_count']}: ")
    assert results["suggest_first_in_view"]
    assert results["suggest_params"]["labels"].endswith("labels.gpkg")
    _layout_ok(results, "change")  # the Detect changes group unfolded
    assert results["change_models"] == ["change-model"]
    assert results["change_detected_s"] is not None
    assert results["change_layers"] == ["changed regions", "change", "confidence"]


def test_a_remote_classify_of_a_raster_only_the_client_has(tmp_path, plugin_zip, backend_outputs):
    """The server keeps to its data root, so the client's raster can only arrive uploaded."""
    from gfm_plugin.backend_process import start_local

    state = tmp_path / "server-state"
    shutil.copytree(backend_outputs / "model", state / "models" / "scene-model")
    (tmp_path / "server-data").mkdir()
    client_side = tmp_path / "laptop" / "scene.tif"
    client_side.parent.mkdir()
    shutil.copy(backend_outputs / "scene.tif", client_side)
    proc = subprocess.Popen([str(VENV_PY), "-m", "gfm_backend.cli", "serve", "--port", "0",
                             "--state-dir", str(state), "--data-root", str(tmp_path / "server-data")],
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        client = start_local(str(VENV_PY), str(state), timeout_s=60)  # finds the one running
        results = _run_desktop(tmp_path, "1280x800", plugin_zip, {
            "remote": True, "state_dir": str(tmp_path / "no-local-backend"),
            "url": client.connection.url, "token": client.connection.token,
            "scene": str(client_side)})
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
    assert results["remote_connected_s"] is not None
    assert set(results["remote_params_raster"]) == {"file"}
    assert results["remote_classified_s"] is not None
    local = tmp_path / "shots-1280x800" / "client" / "results"
    assert results["remote_sources"] and all(s.startswith(str(local)) for s in results["remote_sources"])
    assert results["remote_suggest_s"] is not None and results["remote_suggest_count"] >= 1
    assert results["remote_suggest_source"].startswith(str(local))  # downloaded here
