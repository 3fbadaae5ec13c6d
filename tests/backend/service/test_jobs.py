"""Jobs on a real server: the real task functions, failures in plain words, cancel, lanes."""

from __future__ import annotations

import time

import pytest
import rasterio

from gfm_backend.data.synthetic import make_scene, write_polygons, write_scene
from gfm_backend.service.dispatcher import crash_message

from .conftest import Server


def test_classify_job_runs_the_cli_task_and_reports_outputs(server: Server, small_raster, tmp_path):
    out = tmp_path / "classified"
    job = server.submit("classify", raster=str(small_raster), model="tiny", out=str(out),
                        device="cpu", min_area=1.0, polygons=True)
    assert job["state"] == "queued" and job["resource"] == "cpu"
    assert job["params"]["min_area"] == 1.0 and job["params"]["no_polygons"] is False
    done = server.wait(job["id"])
    assert done["state"] == "succeeded", (done.get("error"), done.get("message"))
    assert done["progress"] == 1.0 and done["timings"]["run_s"] > 0
    files = done["outputs"]["files"]
    for name in ("classes.tif", "confidence.tif", "polygons.gpkg", "report.json"):
        assert files[name] == str(out / name) and (out / name).exists()
    with rasterio.open(small_raster) as src, rasterio.open(out / "classes.tif") as cls:
        assert (cls.crs, cls.transform, cls.shape) == (src.crs, src.transform, src.shape)
    log = server.client().get(f"/jobs/{job['id']}/log").text
    assert "classifying" in log and "succeeded" in log
    assert done["log_tail"] and done["log_tail"][-1].endswith(done["message"])


def test_finetune_job_writes_a_package_that_models_lists(server: Server, scene_files, tmp_path):
    out = tmp_path / "trained"
    job = server.submit("finetune", raster=str(scene_files["raster"]),
                        labels=str(scene_files["labels"]), class_field="class", out=str(out),
                        config="tiny", device="cpu", epochs=1, chips=8, batch_size=4, onnx=False)
    done = server.wait(job["id"])
    assert done["state"] == "succeeded", (done, server.client().get(f"/jobs/{job['id']}/log").text)
    assert (out / "model.json").exists() and "model.json" in done["outputs"]["files"]
    assert 0 <= done["outputs"]["validation"]["overall_accuracy"] <= 1
    models = server.client().get("/models").json()["models"]
    assert any(m["path"] == str(out) and m["source"] == f"fine-tune job {job['id']}" for m in models)


def test_a_job_failing_later_says_why_in_plain_words(server: Server, scene, scene_files, tmp_path):
    import shapely

    far = write_polygons(tmp_path / "far.gpkg", [shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10)],
                         ["water", "forest"], scene.crs)
    job = server.submit("finetune", rasters=[str(scene_files["raster"])], labels=str(far),
                        class_field="class", out=str(tmp_path / "never"), config="tiny", device="cpu")
    done = server.wait(job["id"])
    assert done["state"] == "failed"
    assert "no label polygon overlaps" in done["message"] and "Traceback" not in done["message"]
    assert not (tmp_path / "never").exists()


def test_crashes_become_failed_jobs_and_the_server_carries_on(server: Server, tmp_path):
    expect = {"exit": crash_message(3), "kill": "ran out of memory", "memory": "ran out of memory",
              "input": "/data/scene.tif: band 4 is all nodata", "bug": "internal error: ZeroDivisionError"}
    jobs = {how: server.submit("crash", how=how)["id"] for how in expect}
    for how, job_id in jobs.items():
        done = server.wait(job_id)
        assert done["state"] == "failed" and expect[how] in done["message"], (how, done)
        assert "Traceback" not in done["message"]
    log = server.client().get(f"/jobs/{jobs['bug']}/log").text
    assert "Traceback" in log and "ZeroDivisionError" in log
    after = server.submit("steps", out=str(tmp_path / "after"), steps=2, step_s=0)
    assert server.wait(after["id"])["state"] == "succeeded"
    assert server.client(auth=False).get("/health").status_code == 200


def test_cancel_a_running_and_a_queued_job(server: Server, tmp_path):
    running = server.submit("steps", out=str(tmp_path / "a"), steps=40, step_s=0.05, lane="gpu")
    queued = server.submit("steps", out=str(tmp_path / "b"), steps=1, lane="gpu")
    while server.job(running["id"])["progress"] == 0:  # a step or more done: a checkpoint exists
        time.sleep(0.05)
    c = server.client()
    assert c.post(f"/jobs/{queued['id']}/cancel").status_code == 202
    r = c.post(f"/jobs/{running['id']}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"]
    done = server.wait(running["id"])
    assert done["state"] == "cancelled" and done["progress"] < 1
    assert server.wait(queued["id"])["state"] == "cancelled"
    assert server.job(queued["id"])["timings"]["started"] is None
    r = c.post(f"/jobs/{running['id']}/cancel")
    assert r.status_code == 409 and "already ended" in r.json()["detail"]
    r = c.post(f"/jobs/{running['id']}/resume")  # resumable: a cancelled run can go on
    assert r.status_code == 202
    assert server.wait(running["id"])["outputs"]["resumed_from"] > 0


def test_a_job_that_ignores_cancel_is_stopped_after_the_grace(server: Server):
    job = server.submit("stubborn", seconds=60)
    server.wait(job["id"], ("running",))
    time.sleep(0.5)
    t0 = time.monotonic()
    server.client().post(f"/jobs/{job['id']}/cancel")
    done = server.wait(job["id"], timeout=30)
    assert done["state"] == "cancelled" and "worker was stopped" in done["message"]
    assert time.monotonic() - t0 < 15  # grace is 2 s here


def test_one_gpu_job_at_a_time_cpu_jobs_beside_it(server: Server, tmp_path):
    first = server.submit("steps", out=str(tmp_path / "g1"), steps=20, step_s=0.1, lane="gpu")
    second = server.submit("steps", out=str(tmp_path / "g2"), steps=2, step_s=0.01, lane="gpu")
    cpu = server.submit("steps", out=str(tmp_path / "c1"), steps=2, step_s=0.01, lane="cpu")
    assert server.wait(cpu["id"])["state"] == "succeeded"
    assert server.job(first["id"])["state"] == "running"
    assert server.job(second["id"])["state"] == "queued"
    s1, s2 = server.wait(first["id"]), server.wait(second["id"])
    assert s1["state"] == s2["state"] == "succeeded"
    assert s2["timings"]["started"] >= s1["timings"]["finished"]


def test_one_lane_per_gpu_jobs_placed_on_free_devices(start_server):
    """Two GPUs named: two jobs run at once, each told its device; one pinned to a device
    waits for it although the other is free."""
    server = start_server(None, "--gpu-devices", "0,1")
    long = server.submit("where", seconds=3.0)
    short = server.submit("where", seconds=0.3)
    pinned = server.submit("where", device="cuda:0", seconds=0.1)
    done = {k: server.wait(j["id"]) for k, j in (("long", long), ("short", short),
                                                  ("pinned", pinned))}
    assert {k: d["outputs"]["device"] for k, d in done.items()} == {
        "long": "cuda:0", "short": "cuda:1", "pinned": "cuda:0"}
    assert done["short"]["timings"]["started"] < done["long"]["timings"]["finished"]
    assert done["pinned"]["timings"]["started"] >= done["long"]["timings"]["finished"]
    assert server.job(long["id"])["params"]["device"] == "auto"  # the record keeps what was asked


def test_gpu_devices_are_parsed_or_refused_in_words():
    from gfm_backend.service.gpu_lanes import parse_devices, placed

    assert parse_devices("auto") is None and parse_devices("none") == []
    assert parse_devices("0, 2") == [0, 2]
    for bad in ("gpu0", "1,1", "-1"):
        with pytest.raises(ValueError, match="--gpu-devices"):
            parse_devices(bad)
    assert placed(1, {"device": "auto"}) == {"device": "cuda:1"}
    assert placed(1, {"device": "cpu"}) == {"device": "cpu"}
    assert placed(None, {"device": "auto"}) == {"device": "auto"}


def test_resume_only_where_it_makes_sense(server: Server, small_raster, tmp_path):
    job = server.submit("steps", out=str(tmp_path / "s"), steps=1, step_s=0)
    server.wait(job["id"])
    r = server.client().post(f"/jobs/{job['id']}/resume")
    assert r.status_code == 409 and "succeeded" in r.json()["detail"]
    crash = server.submit("crash", how="input")
    server.wait(crash["id"])
    r = server.client().post(f"/jobs/{crash['id']}/resume")
    assert r.status_code == 409 and "cannot be resumed" in r.json()["detail"]


@pytest.mark.slow
def test_export_job_writes_onnx(server: Server, tmp_path):
    target = tmp_path / "exported" / "model.onnx"
    job = server.submit("export", model_dir="tiny", out=str(target))
    done = server.wait(job["id"], timeout=300)
    assert done["state"] == "succeeded", (done.get("error"), done.get("message"))
    assert done["outputs"]["onnx"] == str(target) and target.stat().st_size > 10_000
    import onnx

    model = onnx.load(str(target), load_external_data=False)  # complete in itself
    assert {p.key for p in model.metadata_props} >= {"gfm_model_json", "class_names"}
    assert [p.name for p in target.parent.iterdir() if not p.name.startswith(".")] == ["model.onnx"]


@pytest.mark.slow
def test_cancelled_classify_leaves_no_finished_looking_files(server: Server, tmp_path):
    raster = write_scene(make_scene(size=2048, seed=4), tmp_path / "big.tif")
    out = tmp_path / "big-out"
    job = server.submit("classify", raster=str(raster), model="tiny", out=str(out), batch_size=1)
    while server.job(job["id"])["progress"] < 0.05:
        time.sleep(0.05)
    server.client().post(f"/jobs/{job['id']}/cancel")
    assert server.wait(job["id"])["state"] == "cancelled"
    assert not (out / "classes.tif").exists() and not (out / "report.json").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_checking_any_job_before_queueing_never_loads_torch(tiny_model, scene_files, tmp_path):
    """The checks run while the client waits for POST /jobs: importing the ML stack there
    took longer than the plugin waits (an export submitted after a pretrain timed out)."""
    import shutil
    import subprocess
    import sys

    from gfm_backend.tasks.geopile import build_geopile
    from gfm_backend.tasks.params import GeopileParams

    imagery = tmp_path / "imagery"
    imagery.mkdir()
    shutil.copy(scene_files["raster"], imagery / "scene.tif")
    build_geopile(GeopileParams(src_folder=imagery, out=tmp_path / "pile", chip=192))
    jobs = {
        "classify": {"raster": str(scene_files["raster"]), "model": str(tiny_model),
                     "out": str(tmp_path / "a")},
        "finetune": {"rasters": [str(scene_files["raster"])], "labels": str(scene_files["labels"]),
                     "class_field": "class", "out": str(tmp_path / "b")},
        "export": {"model_dir": str(tiny_model), "out": str(tmp_path / "c" / "m.onnx")},
        "geopile": {"src_folder": str(imagery), "out": str(tmp_path / "d")},
        "pretrain": {"pile_dir": str(tmp_path / "pile"), "out": str(tmp_path / "e"),
                     "config": "tiny", "teacher": "none"},
        "suggest": {"raster": str(scene_files["raster"]), "model": str(tiny_model),
                    "out": str(tmp_path / "f.gpkg")},
    }
    code = ("import sys\nfrom gfm_backend.service.jobs import get_job_type\n"
            f"for name, params in {jobs!r}.items():\n"
            "    get_job_type(name).validate(params)\n"
            "    assert 'torch' not in sys.modules, f'checking {name} imported torch'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_suggest_job_writes_the_geopackage_and_serves_it(server: Server, small_raster, tmp_path):
    out = tmp_path / "next" / "suggestions.gpkg"
    job = server.submit("suggest", raster=str(small_raster), model="tiny", out=str(out),
                        count=3, cell=32, device="cpu")
    done = server.wait(job["id"])
    assert done["state"] == "succeeded", (done.get("error"), done.get("message"))
    import pyogrio

    assert 1 <= done["outputs"]["suggestions"] == pyogrio.read_info(out)["features"] <= 3
    listed = server.client().get(f"/jobs/{job['id']}/files").json()
    assert [f["name"] for f in listed["files"]] == ["suggestions.gpkg"]
    r = server.client().post("/jobs", json={"type": "suggest", "params": {
        "raster": str(small_raster), "model": "tiny", "out": str(out)}})
    assert r.status_code == 400 and "already exists" in r.json()["detail"]
