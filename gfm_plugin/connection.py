"""One place that turns the settings into a working backend client."""

from __future__ import annotations

import urllib.parse

from .backend_process import find_running, start_local
from .client import BackendClient, BackendError, Connection
from .settings import BackendSettings


def get_client(settings: BackendSettings | None = None, start: bool = True) -> BackendClient:
    """The configured backend: a remote URL + token, or the local one (started if needed)."""
    settings = settings or BackendSettings.load()
    if settings.mode == "remote":
        if not settings.url:
            raise BackendError("no backend URL is set: fill it in the GFM settings")
        return BackendClient(Connection(settings.url, settings.token, settings.fingerprint))
    if start:
        return start_local(settings.python, settings.state_dir)
    client = find_running(settings.state_dir)
    if client is None:
        raise BackendError("the local GFM backend is not running")
    return client


def describe(client: BackendClient) -> str:
    """A short status line: the backend's version and device, once an authenticated call
    has gone through (a refused token raises `BackendError`); the URL goes in the tooltip."""
    health = client.health()
    client.jobs()  # needs the token: "connected" must mean the backend takes our calls
    devices = health.get("devices") or []
    gpu = next((d for d in devices if str(d.get("type", "")).lower() == "cuda"), None)
    if gpu:
        device = f"CUDA: {gpu.get('name', 'GPU')}"
    else:
        device = "CPU"
    where = urllib.parse.urlsplit(client.connection.url).netloc
    local = where.split(":")[0] in ("127.0.0.1", "localhost", "[::1]")
    on = "" if local else f" on {where}"  # a colleague's server: say which
    return f"connected{on}: backend {health.get('version', '?')}, {device}"
