"""Fault injection against a real `gfm serve` on loopback: careless and hostile input.

Every case checks that nothing outside the job's own files changed (the folder is hashed
before and after) and that the service still answers `GET /jobs` afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tree_hash(folder: Path) -> dict[str, str]:
    """Every entry under `folder` (files by content, links by target, folders by name)."""
    out: dict[str, str] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def still_answers(server) -> None:
    r = server.client().get("/jobs")
    assert r.status_code == 200, r.text


def post(server, job_type: str, **params) -> tuple[int, dict]:
    r = server.client().post("/jobs", json={"type": job_type, "params": params})
    return r.status_code, r.json()


@pytest.fixture
def previous_result(server, small_raster, tmp_path) -> Path:
    """A finished classification in `tmp_path/out`."""
    out = tmp_path / "out"
    job = server.submit("classify", raster=str(small_raster), model="tiny", out=str(out),
                        device="cpu")
    assert server.wait(job["id"])["state"] == "succeeded"
    return out


def test_out_is_a_model_package_is_refused(server, small_raster, tiny_model):
    before = tree_hash(tiny_model)
    code, body = post(server, "classify", raster=str(small_raster), model="tiny",
                      out=str(tiny_model.resolve()), device="cpu", overwrite=True)
    assert code == 400 and body["field"] == "out", body
    assert "inside this output folder" in body["detail"] or "model package" in body["detail"]
    assert tree_hash(tiny_model) == before
    still_answers(server)


def test_input_inside_the_output_folder_is_refused(server, previous_result):
    before = tree_hash(previous_result)
    code, body = post(server, "classify", raster=str(previous_result / "classes.tif"),
                      model="tiny", out=str(previous_result), device="cpu", overwrite=True)
    assert code == 400 and "lies inside this output folder" in body["detail"], body
    assert tree_hash(previous_result) == before
    still_answers(server)


def test_a_folder_where_we_write_a_file_is_someone_elses(server, previous_result):
    (previous_result / "polygons.gpkg").unlink()
    (previous_result / "polygons.gpkg").mkdir()
    (previous_result / "polygons.gpkg" / "notes.txt").write_text("mine")
    before = tree_hash(previous_result)
    code, body = post(server, "classify", raster=str(previous_result.parent / "x.tif"),
                      model="tiny", out=str(previous_result), device="cpu", overwrite=True)
    assert code == 400  # the raster does not exist: refused before the folder is looked at
    from gfm_backend.data.synthetic import make_scene, write_scene

    raster = write_scene(make_scene(size=96, seed=1), previous_result.parent / "x.tif")
    code, body = post(server, "classify", raster=str(raster), model="tiny",
                      out=str(previous_result), device="cpu", overwrite=True)
    assert code == 400 and "polygons.gpkg" in body["detail"], body
    assert tree_hash(previous_result) == before
    still_answers(server)


def test_rerun_needs_overwrite_and_then_replaces_the_whole_result(server, previous_result,
                                                                   small_raster):
    before = tree_hash(previous_result)
    code, body = post(server, "classify", raster=str(small_raster), model="tiny",
                      out=str(previous_result), device="cpu", no_polygons=True)
    assert code == 400 and "--overwrite" in body["detail"], body
    assert tree_hash(previous_result) == before
    job = server.submit("classify", raster=str(small_raster), model="tiny",
                        out=str(previous_result), device="cpu", no_polygons=True, overwrite=True)
    assert server.wait(job["id"])["state"] == "succeeded"
    names = {p.name for p in previous_result.iterdir()}
    assert "polygons.gpkg" not in names and "polygons.qml" not in names  # no stale result
    assert {"classes.tif", "confidence.tif", "report.json", ".gfm-output.json"} <= names
    manifest = json.loads((previous_result / ".gfm-output.json").read_text())
    assert set(manifest["files"]) == names - {".gfm-output.json"}
    still_answers(server)


def test_someone_elses_file_is_never_deleted(server, previous_result, small_raster):
    (previous_result / "my-notes.txt").write_text("field notes")
    before = tree_hash(previous_result)
    code, body = post(server, "classify", raster=str(small_raster), model="tiny",
                      out=str(previous_result), device="cpu", overwrite=True)
    assert code == 400 and "my-notes.txt" in body["detail"], body
    assert tree_hash(previous_result) == before


def test_two_jobs_never_write_one_folder(server, small_raster, tmp_path):
    out = tmp_path / "shared"
    first = server.submit("classify", raster=str(small_raster), model="tiny", out=str(out),
                          device="cpu")
    codes = [post(server, "classify", raster=str(small_raster), model="tiny", out=str(out),
                  device="cpu", overwrite=True)[0] for _ in range(2)]
    assert codes == [409, 409]
    assert server.wait(first["id"])["state"] == "succeeded"
    report = json.loads((out / "report.json").read_text())
    assert set(report["outputs"]) == {p.name for p in out.iterdir() if not p.name.startswith(".")}


def test_a_folder_being_written_is_refused_from_another_process(server, small_raster, tmp_path):
    from gfm_backend.outputs import acquire, release

    out = tmp_path / "locked"
    lock = acquire(out)  # this test process is "another job" writing the folder
    try:
        code, body = post(server, "classify", raster=str(small_raster), model="tiny",
                          out=str(out), device="cpu")
        assert code == 409 and "another job is writing" in body["detail"], body
    finally:
        release(out, lock, created=True)
    assert not out.exists()


@pytest.mark.parametrize("bad", ["dangling", "loop", "tab", "newline", "tilde"])
def test_unusable_output_paths_are_clear_errors(server, small_raster, tmp_path, bad):
    if bad == "dangling":
        out = tmp_path / "link"
        out.symlink_to(tmp_path / "nowhere")
    elif bad == "loop":
        out = tmp_path / "loop"
        out.symlink_to(out)
    elif bad == "tab":
        out = tmp_path / "a\tb"
    elif bad == "newline":
        out = tmp_path / "a\nb"
    else:
        out = Path("~/gfm-out")
    before = tree_hash(tmp_path)
    code, body = post(server, "classify", raster=str(small_raster), model="tiny", out=str(out),
                      device="cpu")
    assert code == 400 and body["field"] == "out", body
    assert "internal" not in body["detail"]
    assert tree_hash(tmp_path) == before
    still_answers(server)


def test_non_utf8_path_is_refused_and_never_stored(server, small_raster, tmp_path):
    # a Latin-1 file name arrives in Python as a lone surrogate; JSON can carry it escaped
    params = json.dumps({"raster": str(small_raster), "model": "tiny", "out": str(tmp_path)})
    body = '{"type": "classify", "params": ' + params.replace('"}', '/caf\\udcff"}') + "}"
    r = server.client().post("/jobs", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422), r.text
    assert "UTF-8" in r.json()["detail"] or "utf" in r.json()["detail"].lower()
    still_answers(server)
    for job in server.client().get("/jobs").json()["jobs"]:
        assert server.client().get(f"/jobs/{job['id']}").status_code == 200


def test_a_fifo_as_raster_is_refused_at_once(server, tmp_path):
    fifo = tmp_path / "scene.tif"
    os.mkfifo(fifo)
    for _ in range(5):
        r = server.client().post("/jobs", json={"type": "classify", "params": {
            "raster": str(fifo), "model": "tiny", "out": str(tmp_path / "o")}}, timeout=10)
        assert r.status_code == 400 and "not a regular file" in r.json()["detail"], r.text
    still_answers(server)
    assert server.client().get("/models").status_code == 200


@pytest.mark.parametrize("content", ["[]", "null", "bands-as-text", "zero-scale", "zero-gsd"])
def test_malformed_model_packages_are_400_naming_the_file(server, small_raster, tiny_model,
                                                          tmp_path, content):
    model = tmp_path / "bad-model"
    shutil.copytree(tiny_model, model)
    spec = json.loads((model / "model.json").read_text())
    text = {"[]": "[]", "null": "null",
            "bands-as-text": json.dumps(spec | {"bands": ["1"]}),
            "zero-scale": json.dumps(spec | {"scale": [0, 0, 0]}),
            "zero-gsd": json.dumps(spec | {"gsd_m": 0})}[content]
    (model / "model.json").write_text(text)
    code, body = post(server, "classify", raster=str(small_raster), model=str(model),
                      out=str(tmp_path / "o"), device="cpu")
    assert code == 400 and "model.json" in body["detail"], body
    still_answers(server)


@pytest.mark.parametrize("job_type, params", [
    ("classify", {"min_area": 1e308}),
    ("finetune", {"seed": -1}), ("finetune", {"seed": 2**70}), ("finetune", {"chips": 10**9}),
    ("finetune", {"head_channels": 10**6}), ("finetune", {"tile_size": 0}),
    ("finetune", {"tile_size": 100}), ("finetune", {"bands": []}),
    ("geopile", {"chip": 10**9}),
])
def test_out_of_bounds_parameters_are_400(server, small_raster, scene_files, tmp_path,
                                          job_type, params):
    base = {"classify": {"raster": str(small_raster), "model": "tiny", "out": str(tmp_path / "o")},
            "finetune": {"rasters": [str(scene_files["raster"])], "labels": str(scene_files["labels"]),
                         "out": str(tmp_path / "m"), "config": "tiny"},
            "geopile": {"src_folder": str(scene_files["root"]), "out": str(tmp_path / "p")}}[job_type]
    code, body = post(server, job_type, **base, **params)
    field = next(iter(params))
    assert code == 400 and body["field"] == field, body
    assert not (tmp_path / "o").exists() and not (tmp_path / "m").exists()
    still_answers(server)


def test_a_stopped_worker_fails_its_job_after_the_heartbeat_timeout(start_server, tmp_path):
    import signal
    import time

    s = start_server(tmp_path / "state", "--heartbeat-timeout", "3")
    job = s.submit("stubborn", seconds=120)
    s.wait(job["id"], ("running",))
    time.sleep(0.5)
    worker = s.job(job["id"])["worker_pid"]
    os.kill(worker, signal.SIGSTOP)
    try:
        done = s.wait(job["id"], timeout=30)
    finally:
        try:
            os.kill(worker, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert done["state"] == "failed" and "heartbeat" in done["message"], done
    after = s.submit("stubborn", seconds=0)  # a new worker takes the next job
    assert s.wait(after["id"])["state"] == "succeeded"
    still_answers(s)


def test_state_folder_is_made_private_and_a_lost_database_is_reported(start_server, tmp_path):
    import stat

    state = tmp_path / "state"
    (state / "jobs").mkdir(parents=True)
    (state / "jobs" / "old.log").write_text("a job from before\n")
    state.chmod(0o755)
    s = start_server(state)
    still_answers(s)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for path in [state / "jobs.sqlite3", state / "server.log", state / "token", state / "jobs" / "old.log"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert "job history was lost" in (state / "server.log").read_text()


@pytest.fixture
def small_disk(tmp_path):
    """A real 16 MB tmpfs (root only): the state folder's disk, to fill up."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16M", "tmpfs", str(mount)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    fill = disk / "fill"
    chunk = b"\0" * 2**16
    with open(fill, "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    return fill


def test_a_full_state_disk_answers_507_and_the_service_recovers(start_server, small_disk, tmp_path):
    import time

    s = start_server(small_disk / "state")
    job = s.submit("steps", out=str(tmp_path / "steps"), steps=30, step_s=0.1)
    s.wait(job["id"], ("running",))
    fill = _fill(small_disk)
    try:
        r = s.client().post("/jobs", json={"type": "steps", "params": {"out": str(tmp_path / "x")}})
        assert r.status_code == 507 and "full" in r.json()["detail"], r.text
        time.sleep(4)  # the job ends while nothing can be recorded
        assert s.client().get(f"/jobs/{job['id']}").status_code == 200
        still_answers(s)
    finally:
        fill.unlink()
    assert s.wait(job["id"], timeout=30)["state"] == "succeeded"  # recorded once there is room
    later = s.submit("steps", out=str(tmp_path / "later"), steps=1, step_s=0)
    assert s.wait(later["id"], timeout=30)["state"] == "succeeded"
    still_answers(s)


def test_a_full_output_disk_and_damaged_weights_are_clear_failures(server, small_raster, tiny_model,
                                                                   small_disk, tmp_path):
    fill = _fill(small_disk)
    try:
        job = server.submit("classify", raster=str(small_raster), model="tiny",
                            out=str(small_disk / "out"), device="cpu")
        done = server.wait(job["id"])
        assert done["state"] == "failed" and "no space left" in done["message"], done
        assert "internal error" not in done["message"]
    finally:
        fill.unlink()
    assert not (small_disk / "out").exists()  # nothing half-written is left
    model = tmp_path / "damaged"
    shutil.copytree(tiny_model, model)
    (model / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    job = server.submit("classify", raster=str(small_raster), model=str(model),  # torch reads
                        out=str(tmp_path / "o"), device="cpu", runtime="torch")  # the weights
    done = server.wait(job["id"])
    assert done["state"] == "failed" and "model.safetensors" in done["message"], done
    assert "internal error" not in done["message"]
    still_answers(server)


def test_a_record_an_older_version_stored_with_a_bad_name_is_still_served(start_server, tmp_path):
    import sqlite3

    state = tmp_path / "state"
    s = start_server(state)
    job = s.submit("steps", out=str(tmp_path / "ok"), steps=1, step_s=0)
    s.wait(job["id"])
    s.stop()
    with sqlite3.connect(state / "jobs.sqlite3") as db:  # as the old version wrote it
        db.execute("UPDATE jobs SET params = ? WHERE id = ?",
                   (json.dumps({"out": str(tmp_path / "caf\udcff")}), job["id"]))
    s2 = start_server(state)
    assert s2.client().get("/jobs").status_code == 200
    shown = s2.job(job["id"])
    assert shown["params"]["out"].endswith("caf\\udcff")


def test_out_on_another_filesystem_is_written_in_place(server, small_raster, small_disk):
    """The mount point itself as `out`: staging happens inside it, so no rename crosses
    filesystems (EXDEV)."""
    job = server.submit("classify", raster=str(small_raster), model="tiny", out=str(small_disk),
                        device="cpu", no_polygons=True)
    done = server.wait(job["id"])
    assert done["state"] == "succeeded", done
    assert (small_disk / "classes.tif").exists() and not (small_disk / ".gfm-writing").exists()
