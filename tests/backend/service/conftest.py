"""A real `gfm serve` process on a free loopback port, a real SQLite file, real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gfm_backend.data.synthetic import make_scene, write_scene

REPO = Path(__file__).resolve().parents[3]
TEST_PLUGINS = "tests.backend.service.testjobs"


class Server:
    """One `gfm serve` process (started in its own session so its workers can be reaped)."""

    def __init__(self, state_dir: Path, *args: str, plugins: bool = True) -> None:
        self.state_dir, self.args = Path(state_dir), list(args)
        self.env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.env.pop("GFM_SERVICE_PLUGINS", None)
        if plugins:
            self.env["GFM_SERVICE_PLUGINS"] = TEST_PLUGINS
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self._clients: list[httpx.Client] = []
        self.output = self.state_dir / "serve-output.txt"

    def start(self, timeout: float = 60) -> Server:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.output, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gfm_backend.cli", "serve", "--state-dir", str(self.state_dir),
             "--port", "0", *self.args], stdout=out, stderr=subprocess.STDOUT, env=self.env,
            cwd=REPO, start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        path = self.state_dir / "server.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gfm serve exited ({self.proc.returncode}): {self.log()}")
            try:
                info = json.loads(path.read_text())
                if info["pid"] == self.proc.pid:
                    self.info = info
                    return self
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gfm serve did not become ready: {self.log()}")

    def log(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    @property
    def url(self) -> str:
        return self.info["url"]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.info['token']}"}

    def client(self, auth: bool = True) -> httpx.Client:
        c = httpx.Client(base_url=self.url, headers=self.headers if auth else {}, timeout=30)
        self._clients.append(c)
        return c

    def submit(self, job_type: str, **params: Any) -> dict[str, Any]:
        r = self.client().post("/jobs", json={"type": job_type, "params": params})
        assert r.status_code == 201, r.text
        return r.json()

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.client().get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id: str, states: tuple[str, ...] = ("succeeded", "failed", "cancelled",
             "interrupted"), timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while time.monotonic() < deadline:
                job = c.get(f"/jobs/{job_id}").json()
                if job["state"] in states:
                    return job
                time.sleep(0.1)
        raise AssertionError(f"job {job_id} not {states} after {timeout} s: {job}\n{self.log()}")

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        """Finalizer: stop the server, then anything left in its session."""
        for c in self._clients:
            c.close()
        self.stop()
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def start_server(tmp_path) -> Iterator:
    """Factory: start_server(state_dir=None, *args) -> a ready Server; all stopped at the end."""
    servers: list[Server] = []

    def start(state_dir: Path | None = None, *args: str, plugins: bool = True) -> Server:
        server = Server(state_dir or tmp_path / "state", *args, plugins=plugins)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model) -> Iterator[Server]:
    """A server shared by a test module; its models folder holds the tiny model as `tiny`."""
    state = tmp_path_factory.mktemp("state")
    models = state / "models"
    models.mkdir()
    (models / "tiny").symlink_to(tiny_model, target_is_directory=True)
    s = Server(state, "--cancel-grace", "2")
    try:
        yield s.start()
    finally:
        s.close()


@pytest.fixture(scope="session")
def small_raster(tmp_path_factory) -> Path:
    """128 x 128 px of the synthetic scene: classify takes about a second on a CPU."""
    return write_scene(make_scene(size=128, seed=3), tmp_path_factory.mktemp("small") / "small.tif")
