"""A large classify job split over two GPUs of a real `gfm serve --gpu-devices 0,1`: one job
whose ranks run on both devices' slots and give the single process's class raster; a small
one runs alone; a cancel, a failing rank or a dead worker ends every rank and frees both
slots. Without a GPU here the ranks compute on the CPU (gloo): the test job type
`classify-on-cpu` is the real classify job, told `cpu` where the service placed it on
`cuda:N`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gfm_backend.data.synthetic import make_scene, write_scene

from ..tasks.test_classify_ranks import damaged_raster
from .conftest import Server, alive

MIN_MPIX = "0.2"  # the 512 and 700 px rasters split, the 128 px one does not
RANK_THREADS = max((os.cpu_count() or 1) // 2, 1)  # what each of two CPU ranks computes with


@pytest.fixture(scope="module")
def two_gpus(tmp_path_factory, tiny_model) -> Iterator[Server]:
    state = tmp_path_factory.mktemp("state")
    (state / "models").mkdir()
    (state / "models" / "tiny").symlink_to(tiny_model, target_is_directory=True)
    server = Server(state, "--gpu-devices", "0,1", "--split-classify-min-mpix", MIN_MPIX,
                    "--cancel-grace", "30")
    try:
        yield server.start()
    finally:
        server.close()


def _submit(server: Server, raster: Path, out: Path) -> str:
    return server.submit("classify-on-cpu", raster=str(raster), model="tiny", out=str(out),
                         batch_size=2)["id"]


def _log(server: Server, job_id: str) -> str:
    return server.client().get(f"/jobs/{job_id}/log").text


def _rank_pids(log: str) -> list[int]:
    """The worker of each rank, from the service's lines in the job log."""
    first = re.search(r"started \(attempt \d+\) on gpu-0 \(cuda:0\), worker pid (\d+) as rank 0", log)
    second = re.search(r"rank 1 of 2 on gpu-1 \(cuda:1\), worker pid (\d+)", log)
    assert first and second, log
    return [int(first.group(1)), int(second.group(1))]


def _wait_for_progress(server: Server, job_id: str) -> None:
    deadline = time.monotonic() + 120
    while server.job(job_id)["progress"] == 0:  # rank 0 is through a tile row: ranks are at work
        assert time.monotonic() < deadline and server.job(job_id)["state"] in ("queued", "running")
        time.sleep(0.05)


def _both_slots_free(server: Server) -> None:
    """Two jobs run at once, one on each device."""
    jobs = [server.submit("where", seconds=1.5)["id"] for _ in range(2)]
    done = [server.wait(j) for j in jobs]
    assert sorted(d["outputs"]["device"] for d in done) == ["cuda:0", "cuda:1"]
    assert done[1]["timings"]["started"] < done[0]["timings"]["finished"]


def _one_process(raster: Path, model: Path, out: Path) -> None:
    """`gfm classify` alone, with a rank's threads (the class raster is byte for byte the
    same only at the same thread count)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(RANK_THREADS), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "gfm_backend.cli", "--quiet", "classify", str(raster),
                          "--model", str(model), "--out", str(out), "--device", "cpu",
                          "--batch-size", "2"], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]


def test_a_large_classify_runs_as_two_ranks_and_gives_the_one_process_raster(
        two_gpus: Server, tiny_model, tmp_path):
    raster = write_scene(make_scene(size=700, seed=5), tmp_path / "scene.tif")
    job_id = _submit(two_gpus, raster, tmp_path / "split")
    done = two_gpus.wait(job_id, timeout=300)
    assert done["state"] == "succeeded", (done["message"], _log(two_gpus, job_id))
    assert done["message"].endswith("as 2 ranks") and done["progress"] == 1.0
    assert done["outputs"]["placed"] == "cuda:0"  # rank 0's result is the job's
    report = json.loads((tmp_path / "split" / "report.json").read_text())
    assert report["ranks"] == 2
    log = _log(two_gpus, job_id)
    assert len(_rank_pids(log)) == 2 and "as rank 1 of 2" in log
    _one_process(raster, tiny_model, tmp_path / "one")
    split, one = tmp_path / "split", tmp_path / "one"
    assert (split / "classes.tif").read_bytes() == (one / "classes.tif").read_bytes()
    assert sorted(os.listdir(split)) == sorted(os.listdir(one))  # no parts left behind


def test_a_small_classify_runs_alone_as_before(two_gpus: Server, small_raster, tmp_path):
    job_id = _submit(two_gpus, small_raster, tmp_path / "small")
    done = two_gpus.wait(job_id, timeout=300)
    assert done["state"] == "succeeded", done["message"]
    assert re.fullmatch(r"done in [\d.]+ s", done["message"])
    assert "ranks" not in json.loads((tmp_path / "small" / "report.json").read_text())
    assert "rank" not in _log(two_gpus, job_id)


def test_cancelling_a_split_job_stops_every_rank_and_leaves_nothing(two_gpus: Server, tmp_path):
    raster = write_scene(make_scene(size=1400, seed=7), tmp_path / "large.tif")
    out = tmp_path / "cancelled"
    job_id = _submit(two_gpus, raster, out)
    _wait_for_progress(two_gpus, job_id)
    assert two_gpus.client().post(f"/jobs/{job_id}/cancel").status_code == 202
    done = two_gpus.wait(job_id, timeout=120)
    assert done["state"] == "cancelled", (done["message"], _log(two_gpus, job_id))
    assert done["message"] == "cancelled; partial outputs were discarded"  # no rank needed force
    log = _log(two_gpus, job_id)
    assert log.count("cancelled: cancelled by the user") == 2, log  # each rank saw the cancel
    assert all(alive(pid) for pid in _rank_pids(log))  # warm workers, ready for the next job
    assert not (out / "classes.tif").exists() and not (out / "report.json").exists()
    _both_slots_free(two_gpus)


def test_a_failing_rank_fails_the_job_in_its_words_and_frees_both_slots(two_gpus: Server, tmp_path):
    out = tmp_path / "out"
    job_id = _submit(two_gpus, damaged_raster(tmp_path), out)
    done = two_gpus.wait(job_id, timeout=300)
    assert done["state"] == "failed", done["message"]
    assert done["message"].startswith("rank 1 of 2 failed: ") and \
        "damaged.tif: cannot be read at rows" in done["message"], done["message"]
    assert "Traceback" not in done["message"]
    assert not (out / "classes.tif").exists() and not (out / "report.json").exists()
    _both_slots_free(two_gpus)


def test_a_rank_whose_worker_dies_fails_the_job_and_the_other_is_stopped(two_gpus: Server, tmp_path):
    raster = write_scene(make_scene(size=1400, seed=8), tmp_path / "large.tif")
    out = tmp_path / "killed"
    job_id = _submit(two_gpus, raster, out)
    _wait_for_progress(two_gpus, job_id)
    first, second = _rank_pids(_log(two_gpus, job_id))
    os.kill(second, signal.SIGKILL)
    t0 = time.monotonic()
    done = two_gpus.wait(job_id, timeout=60)
    assert time.monotonic() - t0 < 20  # not the 30 s grace, not gloo's 30 min timeout
    assert done["state"] == "failed"
    assert done["message"].startswith("rank 1 of 2 failed: the job's worker process was killed "
                                      "(SIGKILL)"), done["message"]
    assert not alive(first)  # rank 0 would have waited for rank 1 for good: stopped
    assert not (out / "classes.tif").exists() and not (out / "report.json").exists()
    _both_slots_free(two_gpus)
