"""Restarts: records survive, `kill -9` leaves `interrupted` (never `running` forever),
workers do not outlive their server, and a resumable job carries on from its checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from gfm_backend.data.synthetic import make_scene, write_scene

from .conftest import alive


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_kill_9_then_restart_shows_interrupted_and_resume_goes_on(start_server, tmp_path):
    state = tmp_path / "state"
    s = start_server(state, "--cancel-grace", "3")
    before = s.submit("steps", out=str(tmp_path / "done"), steps=1, step_s=0)
    s.wait(before["id"])
    out = tmp_path / "long"
    job = s.submit("steps", out=str(out), steps=60, step_s=0.05)
    blocker = s.submit("steps", out=str(tmp_path / "blocker"), steps=600, step_s=0.05, lane="gpu")
    waiting = s.submit("steps", out=str(tmp_path / "later"), steps=1, step_s=0, lane="gpu")
    while s.job(job["id"])["progress"] < 0.1:
        time.sleep(0.05)
    assert s.job(waiting["id"])["state"] == "queued"
    worker = s.job(job["id"])["worker_pid"]
    assert worker and alive(worker)
    s.kill9()
    assert _wait_gone(worker, 10), "the worker outlived its server"
    assert json.loads((state / "server.json").read_text())["pid"] == s.proc.pid  # stale, by design

    s2 = start_server(state, "--cancel-grace", "3")
    assert s2.proc.pid != s.proc.pid
    after = s2.job(job["id"])
    assert after["state"] == "interrupted", after
    assert "resume" in after["message"] and after["timings"]["finished"]
    assert not (out / "checkpoint.json.partial").exists()
    checkpoint = json.loads((out / "checkpoint.json").read_text())["step"]
    assert 0 < checkpoint < 60
    assert s2.job(before["id"])["state"] == "succeeded"  # history survives
    assert s2.job(blocker["id"])["state"] == "interrupted"
    assert s2.wait(waiting["id"])["state"] == "succeeded"  # the queue survives too

    r = s2.client().post(f"/jobs/{job['id']}/resume")
    assert r.status_code == 202 and r.json()["params"]["resume"] is True
    done = s2.wait(job["id"])
    assert done["state"] == "succeeded" and done["attempts"] == 2
    assert done["outputs"]["resumed_from"] == checkpoint
    log = s2.client().get(f"/jobs/{job['id']}/log").text
    assert "interrupted" not in done["message"] and "resume requested" in log
    assert "cancelled by the user" not in log and "the service went away" in log


def test_sigterm_stops_jobs_as_interrupted_and_removes_server_json(start_server, tmp_path):
    state = tmp_path / "state"
    s = start_server(state)
    job = s.submit("steps", out=str(tmp_path / "x"), steps=400, step_s=0.05)
    s.wait(job["id"], ("running",))
    worker = s.job(job["id"])["worker_pid"]
    assert s.stop() == 0
    assert not (state / "server.json").exists()
    assert _wait_gone(worker, 10)
    r = subprocess.run([sys.executable, "-m", "gfm_backend.cli", "jobs", "--state-dir", str(state)],
                       capture_output=True, text=True, env=s.env, timeout=60)
    assert r.returncode == 0, r.stderr
    listing = json.loads(r.stdout)  # read from the records while no server runs
    assert listing["server"] is None and listing["jobs"][0]["state"] == "interrupted"
    s2 = start_server(state)
    assert s2.job(job["id"])["state"] == "interrupted"
    assert "service was stopped" in s2.job(job["id"])["message"]


def test_pretrain_job_survives_kill_9_and_resumes_from_its_checkpoint(start_server, tmp_path):
    """The real thing: a GeoPile job, then continual pretraining that the server's death
    interrupts; after a restart, POST /jobs/{id}/resume carries it on to the end."""
    src = tmp_path / "imagery" / "synthetic"
    src.mkdir(parents=True)
    write_scene(make_scene(size=384, seed=8), src / "scene.tif")
    state = tmp_path / "state"
    s = start_server(state)
    pile = s.wait(s.submit("geopile", src_folder=str(tmp_path / "imagery"),
                           out=str(tmp_path / "pile"))["id"])
    assert pile["state"] == "succeeded", pile
    assert pile["outputs"]["chips_total"] >= 4
    run = tmp_path / "run"
    job = s.submit("pretrain", pile_dir=str(tmp_path / "pile"), out=str(run), config="tiny",
                   teacher="none", batch=2, max_steps=1000, checkpoint_every=10_000, log_every=1,
                   device="cpu")
    assert job["resumable"] and job["params"]["resume"] is False
    while s.job(job["id"])["progress"] < 0.002:  # two steps or more
        time.sleep(0.1)
    worker = s.job(job["id"])["worker_pid"]
    s.kill9()
    assert _wait_gone(worker, 15), "the worker outlived its server"
    latest = (run / "checkpoints" / "latest").read_text().strip()  # saved as it stopped

    s2 = start_server(state)
    assert s2.job(job["id"])["state"] == "interrupted"
    r = s2.client().post(f"/jobs/{job['id']}/resume")
    assert r.status_code == 202, r.text
    while s2.job(job["id"])["progress"] < 0.004:
        time.sleep(0.1)
    s2.client().post(f"/jobs/{job['id']}/cancel")
    done = s2.wait(job["id"])
    assert done["state"] == "cancelled" and done["attempts"] == 2
    log = s2.client().get(f"/jobs/{job['id']}/log").text
    assert f"resuming {run} at step {int(latest.split('-')[1])}" in log
    assert (run / "checkpoints" / "latest").read_text().strip() > latest
