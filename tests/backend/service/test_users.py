"""Tokens per user on a shared server: each user sees, reads and cancels only their own
jobs, uploads and outputs; the admin (server.json's token) sees all; tokens are stored
hashed, and `gfm users remove` takes effect on the running server."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from .conftest import REPO, Server


def _users(state, *args: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "gfm_backend.cli", "--quiet", "users", *args,
                        "--state-dir", str(state)], capture_output=True, text=True, cwd=REPO,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def team(server: Server):
    tokens = {name: _users(server.state_dir, "add", name)["token"] for name in ("ana", "ben")}
    clients = {name: httpx.Client(base_url=server.url, timeout=30,
                                  headers={"Authorization": f"Bearer {token}"})
               for name, token in tokens.items()}
    yield clients, tokens
    for c in clients.values():
        c.close()


def test_tokens_are_stored_hashed(server: Server, team):
    _, tokens = team
    text = (server.state_dir / "users.json").read_text()
    assert all(token not in text for token in tokens.values())
    assert (server.state_dir / "users.json").stat().st_mode & 0o077 == 0


def test_a_user_sees_only_their_own_jobs_and_files(server: Server, team, small_raster, tmp_path):
    clients, _ = team
    ana, ben = clients["ana"], clients["ben"]
    upload = ana.post("/files", content=small_raster.read_bytes(),
                      headers={"X-Filename": "ana.tif"}).json()
    job = ana.post("/jobs", json={"type": "classify", "params": {
        "raster": {"file": upload["id"]}, "model": "tiny", "out": {"output": "anas"},
        "device": "cpu"}}).json()
    assert job["owner"] == "ana"
    assert server.wait(job["id"])["state"] == "succeeded"
    assert [j["id"] for j in ana.get("/jobs").json()["jobs"]] == [job["id"]]
    assert ben.get("/jobs").json()["jobs"] == []
    for path in (f"/jobs/{job['id']}", f"/jobs/{job['id']}/log", f"/jobs/{job['id']}/files",
                 f"/jobs/{job['id']}/files/classes.tif", f"/files/{upload['id']}"):
        assert ben.get(path).status_code == 404, path
        assert ana.get(path).status_code == 200, path
    assert ben.post(f"/jobs/{job['id']}/cancel").status_code == 404
    stolen = ben.post("/jobs", json={"type": "classify", "params": {
        "raster": {"file": upload["id"]}, "model": "tiny", "out": {"output": "bens"}}})
    assert stolen.status_code == 400 and "no upload" in stolen.json()["detail"]
    admin = server.client()  # server.json's token
    assert job["id"] in [j["id"] for j in admin.get("/jobs").json()["jobs"]]
    assert admin.get(f"/jobs/{job['id']}/files").status_code == 200


def test_only_an_admin_removes_the_shared_weights(server: Server, team):
    clients, _ = team
    r = clients["ben"].delete("/weights/gfm")
    assert r.status_code == 403 and "only an admin" in r.json()["detail"]
    assert server.client().delete("/weights/gfm").status_code == 404  # the admin: none here


def test_a_removed_user_is_refused_at_once(server: Server, team):
    token = _users(server.state_dir, "add", "carl")["token"]
    carl = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
    assert carl.get("/jobs").status_code == 200
    _users(server.state_dir, "remove", "carl")
    assert carl.get("/jobs").status_code == 401
    carl.close()
