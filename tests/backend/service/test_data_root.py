"""`gfm serve --data-root DIR`: jobs read and write only under DIR and the service's own
uploads and outputs, so a user of a shared server cannot name /etc or another home."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from .conftest import REPO, Server


@pytest.fixture(scope="module")
def rooted(tmp_path_factory, tiny_model, small_raster):
    base = tmp_path_factory.mktemp("rooted")
    data = base / "data"
    data.mkdir()
    shutil.copy(small_raster, data / "scene.tif")
    state = base / "state"
    (state / "models").mkdir(parents=True)
    (state / "models" / "tiny").symlink_to(tiny_model, target_is_directory=True)
    server = Server(state, "--data-root", str(data))
    try:
        yield server.start(), data
    finally:
        server.close()


def _submit(server: Server, **params):
    return server.client().post("/jobs", json={"type": "classify", "params": params})


@pytest.mark.parametrize("field", ["raster", "out"])
def test_a_path_outside_the_data_root_is_refused_naming_it(rooted, tmp_path, field, small_raster):
    server, data = rooted
    params = {"raster": str(data / "scene.tif"), "model": "tiny", "out": str(data / "out-a")}
    params[field] = str(small_raster) if field == "raster" else str(tmp_path / "elsewhere")
    r = _submit(server, **params)
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert detail.startswith(f"params.{field}") and "outside the folders" in detail
    assert str(params[field]) in detail


def test_etc_and_links_out_of_the_root_are_refused(rooted):
    server, data = rooted
    (data / "innocent.tif").symlink_to("/etc/passwd")
    for raster in ("/etc/passwd", str(data / "innocent.tif"), str(data / ".." / ".." / "x.tif")):
        r = _submit(server, raster=raster, model="tiny", out=str(data / "out-b"))
        assert r.status_code == 400, raster


def test_jobs_inside_the_root_uploads_and_service_outputs_run(rooted, small_raster):
    server, data = rooted
    ok = _submit(server, raster=str(data / "scene.tif"), model="tiny", out=str(data / "out-c"),
                 device="cpu")
    assert ok.status_code == 201, ok.text
    upload = server.client().post("/files", content=small_raster.read_bytes(),
                                  headers={"X-Filename": "scene.tif"}).json()
    sent = _submit(server, raster={"file": upload["id"]}, model="tiny",
                   out={"output": "from-upload"}, device="cpu")
    assert sent.status_code == 201, sent.text
    for job in (ok.json(), sent.json()):
        assert server.wait(job["id"])["state"] == "succeeded"


def test_listening_beyond_loopback_needs_a_data_root(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gfm_backend.cli", "serve", "--state-dir",
                        str(tmp_path / "s"), "--host", "0.0.0.0"], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert r.returncode == 2 and "--data-root" in r.stderr and "Traceback" not in r.stderr
