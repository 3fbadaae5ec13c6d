"""`gfm serve`: one process per state folder that owns the queue, the workers and the GPU.

Startup order matters: take the state folder's lock (a second server would run the same
jobs twice), mark jobs a dead predecessor left `running` as `interrupted`, bind the
socket (port 0: the kernel picks a free one, and we know which), start uvicorn, and only
once it accepts requests write `server.json` (url, token, pid, version; mode 0600,
written atomically) so a client that finds the file can use it at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import logging.handlers
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .. import __version__
from ..errors import GfmError
from .config import API_VERSION, LOOPBACK_HOSTS, ServiceConfig
from .security import WILDCARD_HOSTS, load_or_create_token, write_private_json

log = logging.getLogger("gfm_backend.service")


@contextlib.contextmanager
def state_lock(config: ServiceConfig) -> Iterator[None]:
    """Hold the state folder for this process's lifetime (the kernel drops it on kill -9)."""
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    make_private(config.state_dir)
    f: IO[str] = open(config.lock_path, "a+")  # held open while serving
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise GfmError(f"another gfm serve is already running with state folder "
                       f"{config.state_dir} ({_running_url(config)}); stop it first or use "
                       "--state-dir") from None
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def _running_url(config: ServiceConfig) -> str:
    try:
        info = json.loads(config.server_json.read_text(encoding="utf-8"))
        return f"{info['url']}, pid {info['pid']}"
    except (OSError, ValueError, KeyError):
        return "see server.json"


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; port 0 gets a free port from the kernel."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise GfmError(f"--host {host!r}: cannot resolve it ({exc.strerror})") from exc
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        hint = "; use --port 0 for a free one" if port else ""
        raise GfmError(f"cannot listen on {host}:{port} ({exc.strerror}){hint}") from exc
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


def certificate_fingerprint(config: ServiceConfig) -> str | None:
    """SHA-256 of the HTTPS certificate (what clients pin), or None without HTTPS."""
    import hashlib
    import ssl

    if (config.certfile is None) != (config.keyfile is None):
        raise GfmError("give both --certfile and --keyfile (or neither)")
    if config.certfile is None or config.keyfile is None:
        return None
    for flag, path in (("--certfile", config.certfile), ("--keyfile", config.keyfile)):
        if not Path(path).is_file():
            raise GfmError(f"{flag} {path}: no such file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(config.certfile,
                                                                           config.keyfile)
        der = ssl.PEM_cert_to_DER_cert(Path(config.certfile).read_text(encoding="ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError) as exc:
        raise GfmError(f"--certfile {config.certfile} / --keyfile {config.keyfile}: not a "
                       f"certificate and its key in PEM ({exc})") from exc
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, 64, 2))


def public_url(host: str, port: int, tls: bool = False) -> str:
    """The URL a local client uses; a wildcard bind is reached through loopback."""
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1" if host != "::" else "::1"
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


def make_private(state_dir: Path) -> None:
    """The state folder holds the token, job parameters (paths) and logs: the user's only.
    A folder made by an older version (or by hand) is tightened at every start."""
    os.chmod(state_dir, 0o700)
    for root, dirs, files in os.walk(state_dir):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o600)
        # only our own folders: models folders inside are the user's to share
        dirs[:] = [d for d in dirs if d == "jobs" and not os.path.islink(os.path.join(root, d))]
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)


def warn_if_history_lost(config: ServiceConfig) -> None:
    """A database deleted while a server ran would otherwise start afresh without a word."""
    if config.db_path.exists() or not config.jobs_dir.is_dir():
        return
    logs = sum(1 for _ in config.jobs_dir.glob("*.log"))
    if logs:
        log.warning("the job database %s is missing although %s holds %d job logs: the job "
                    "history was lost (was the file deleted?); starting a new one",
                    config.db_path, config.jobs_dir, logs)


def _log_to_file(path: Path) -> logging.Handler:
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=2,
                                                   encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("gfm_backend").addHandler(handler)
    os.chmod(path, 0o600)
    return handler


def serve(config: ServiceConfig) -> dict[str, Any]:
    """Run the service until SIGINT/SIGTERM; returns a summary for the CLI."""
    from .jobs import load_plugins

    if config.gpu_jobs < 1 or config.cpu_jobs < 1:
        raise GfmError("--gpu-jobs and --cpu-jobs must be at least 1")
    if not config.split_min_mpix >= 0:
        raise GfmError("--split-classify-min-mpix must be 0 or more (inf: never split)")
    if config.host not in LOOPBACK_HOSTS and config.data_root is None:
        raise GfmError(f"--host {config.host}: a service others can reach needs --data-root DIR, "
                       "the only folder its jobs may read and write (besides their uploads and "
                       "outputs), so that no one can name /etc or another user's files")
    if config.data_root is not None and not config.data_root.is_dir():
        raise GfmError(f"--data-root {config.data_root}: no such folder")
    fingerprint = certificate_fingerprint(config)
    with state_lock(config):
        handler = _log_to_file(config.log_path)
        try:
            plugins = load_plugins()
            if plugins:
                log.info("job-type plugins: %s", ", ".join(plugins))
            store = _open_store(config)
            sock = bind_socket(config.host, config.port)
            url = public_url(config.host, sock.getsockname()[1], tls=fingerprint is not None)
            try:
                _run(config, store, sock, url, fingerprint)
            finally:
                store.close()
                sock.close()
        finally:
            logging.getLogger("gfm_backend").removeHandler(handler)
            handler.close()
    return {"stopped": True, "url": url, "state_dir": str(config.state_dir)}


def _open_store(config: ServiceConfig) -> Any:
    """The job store, private, with jobs a previous server left running marked interrupted."""
    from .store import JobStore

    config.jobs_dir.mkdir(exist_ok=True, mode=0o700)
    warn_if_history_lost(config)
    store = JobStore(config.db_path)
    os.chmod(config.db_path, 0o600)  # SQLite gives its -wal and -shm files the same mode
    for record in store.interrupt_running():
        log.warning("job %s (%s) was running when the last server stopped: marked interrupted",
                    record.id, record.type)
    return store


def _run(config: ServiceConfig, store: Any, sock: socket.socket, url: str,
         fingerprint: str | None = None) -> None:
    """Serve on `sock` until a signal; the dispatcher stops its jobs (interrupted) after."""
    import uvicorn

    from .app import ServiceState, create_app
    from .device_probe import DeviceProbe
    from .dispatcher import Dispatcher

    token = load_or_create_token(config.token_path)
    port = sock.getsockname()[1]
    if config.host not in LOOPBACK_HOSTS and fingerprint is None:
        log.warning("listening on %s:%d, not only on this computer, over plain HTTP: tokens and "
                    "files cross the network unencrypted; give --certfile and --keyfile, or "
                    "reach a loopback-only service through an SSH tunnel", config.host, port)
    elif config.host not in LOOPBACK_HOSTS:
        log.info("listening on %s:%d over HTTPS, certificate SHA-256 %s", config.host, port,
                 fingerprint)
    devices = DeviceProbe()
    devices.start()
    dispatcher = Dispatcher(store, config)
    dispatcher.start()
    if config.keep_days is not None:
        from . import janitor

        janitor.start(config, store, config.keep_days)
    state = ServiceState(config, store, dispatcher, devices, token, time.time())
    server = uvicorn.Server(uvicorn.Config(
        create_app(state), log_config=None, access_log=False, lifespan="off",
        timeout_graceful_shutdown=5, backlog=2048,
        ssl_certfile=str(config.certfile) if fingerprint else None,
        ssl_keyfile=str(config.keyfile) if fingerprint else None))
    info = {"url": url, "token": token, "pid": os.getpid(), "version": __version__,
            "api_version": API_VERSION, "host": config.host, "port": port,
            "fingerprint": fingerprint,
            "state_dir": str(config.state_dir)}
    threading.Thread(target=_announce, args=(server, config, info), daemon=True,
                     name="gfm-announce").start()
    # uvicorn turns SIGINT/SIGTERM into a graceful shutdown, then re-raises the signal to the
    # handler it found; with ours (a no-op) the cleanup below still runs.
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        log.info("stopping: running jobs are asked to stop and will show as interrupted")
        dispatcher.stop()
        _remove_server_json(config)
        for sig, old in previous.items():
            signal.signal(sig, old)


def _ignore(signum: int, frame: Any) -> None:
    log.debug("already stopping (signal %d)", signum)


def _announce(server: Any, config: ServiceConfig, info: dict[str, Any]) -> None:
    """Write server.json once uvicorn accepts requests."""
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.02)
    write_private_json(config.server_json, info)
    log.info("serving at %s (state folder %s, %d GPU-lane and %d CPU-lane job(s) at a time)",
             info["url"], config.state_dir, config.gpu_jobs, config.cpu_jobs)


def _remove_server_json(config: ServiceConfig) -> None:
    with contextlib.suppress(OSError, ValueError):
        if json.loads(config.server_json.read_text(encoding="utf-8")).get("pid") == os.getpid():
            config.server_json.unlink()
