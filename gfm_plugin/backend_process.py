"""Find or start the local `gfm serve` backend (a separate process that outlives QGIS)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from .client import BackendClient, BackendError, Connection

SERVER_JSON = "server.json"


def find_running(state_dir: str) -> BackendClient | None:
    """The backend a previous start left running, if its server.json still answers."""
    path = Path(state_dir) / SERVER_JSON
    if not path.exists():
        return None
    try:
        client = BackendClient(Connection.from_server_json(path), timeout=3.0)
        client.health()
        return client
    except BackendError:
        return None


# Backends started from this QGIS: kept referenced, since they outlive the call (and QGIS).
_STARTED: list[subprocess.Popen] = []


def start_local(python: str, state_dir: str, timeout_s: float = 60.0) -> BackendClient:
    """Start `python -m gfm_backend.cli serve` detached and wait until it accepts requests."""
    running = find_running(state_dir)
    if running is not None:
        return running
    if not python or not Path(python).exists():
        raise BackendError(
            "no Python with the GFM backend is configured: set it in the GFM settings "
            "(the `python` next to the `gfm` command, e.g. .venv/bin/python)"
        )
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    stale = Path(state_dir) / SERVER_JSON
    if stale.exists():
        stale.unlink()
    with open(Path(state_dir) / "serve.log", "ab") as log:  # the child keeps its own copy
        _STARTED.append(subprocess.Popen(  # noqa: S603 (the user's configured interpreter)
            [python, "-m", "gfm_backend.cli", "serve", "--port", "0", "--state-dir", state_dir],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives QGIS closing; never killed with QGIS
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        ))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        client = find_running(state_dir)
        if client is not None:
            return client
        time.sleep(0.3)
    raise BackendError(
        f"the GFM backend did not start within {timeout_s:.0f} s; see {state_dir}/serve.log"
    )
