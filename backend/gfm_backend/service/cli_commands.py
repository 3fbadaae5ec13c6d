"""`gfm serve` and `gfm jobs`: argument parsing only; the work is in `server` and `client`.

Kept light to import: the `gfm` command loads this module for every subcommand.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import GfmError
from ..progress import Progress
from .config import STATE_DIR_ENV, ServiceConfig, default_state_dir


def _state_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", type=Path, default=None,
                   help=f"job records, logs, server.json (default: ${STATE_DIR_ENV} or "
                   f"{default_state_dir()})")


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the local job service (HTTP API for the QGIS plugin)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: loopback only; anything else warns)")
    p.add_argument("--port", type=int, default=0, help="TCP port (default 0: a free one)")
    _state_dir_arg(p)
    p.add_argument("--gpu-jobs", type=int, default=1,
                   help="GPU-lane jobs (classify, finetune, pretrain) at a time, per GPU")
    p.add_argument("--gpu-devices", default="auto", metavar="auto|none|0,1",
                   help="GPUs to place jobs on, one lane each (auto: those nvidia-smi lists)")
    p.add_argument("--split-classify-min-mpix", type=float, default=16.0, metavar="MPIX",
                   help="a classify job of at least MPIX megapixels (and 2 tile rows per rank) "
                   "that finds several GPUs free runs on all of them at once, one rank each "
                   "(default 16, 4000 x 4000 px; inf: never)")
    p.add_argument("--cpu-jobs", type=int, default=2,
                   help="CPU-lane jobs (export, geopile, device cpu) at a time beside them")
    p.add_argument("--models", type=Path, action="append", metavar="DIR",
                   help="folder of model packages GET /models lists (repeatable; default "
                   "STATE_DIR/models)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="extra name clients may use in the Host header (repeatable)")
    p.add_argument("--heartbeat-timeout", type=float, default=60.0, metavar="S",
                   help="a job whose worker sends no heartbeat for S seconds (hung, or stopped) "
                   "is killed and fails with a message saying so")
    p.add_argument("--cancel-grace", type=float, default=10.0, metavar="S",
                   help="seconds a cancelled job gets to stop before its worker is stopped")
    p.add_argument("--data-root", type=Path, default=None, metavar="DIR",
                   help="jobs may read and write only under DIR (and the uploads and outputs "
                   "in the state folder); needed to listen beyond loopback")
    p.add_argument("--certfile", type=Path, default=None, metavar="PEM",
                   help="serve HTTPS with this certificate (with --keyfile)")
    p.add_argument("--keyfile", type=Path, default=None, metavar="PEM",
                   help="the certificate's private key")
    p.add_argument("--keep-days", type=float, default=None, metavar="N",
                   help="remove uploads and the service's job outputs N days old (never what a "
                   "queued or running job uses)")
    p.add_argument("--user-quota-gb", type=float, default=None, metavar="GB",
                   help="refuse an upload that would make a user's uploads larger than this (413)")
    p.add_argument("--max-upload-gb", type=float, default=None, metavar="GB",
                   help="refuse uploads (POST /files) larger than this (HTTP 413)")


def run_serve(a: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .gpu_lanes import parse_devices, probe_devices
    from .server import serve

    try:
        devices = parse_devices(a.gpu_devices)
    except ValueError as exc:
        raise GfmError(str(exc)) from exc
    return serve(ServiceConfig(
        state_dir=a.state_dir or default_state_dir(), host=a.host, port=a.port,
        gpu_jobs=a.gpu_jobs, cpu_jobs=a.cpu_jobs, cancel_grace_s=a.cancel_grace,
        split_min_mpix=a.split_classify_min_mpix,
        gpu_devices=probe_devices() if devices is None else devices,
        heartbeat_timeout_s=a.heartbeat_timeout, max_upload_gb=a.max_upload_gb,
        user_quota_gb=a.user_quota_gb,
        data_root=a.data_root, keep_days=a.keep_days, certfile=a.certfile, keyfile=a.keyfile,
        model_dirs=a.models or [], allow_hosts=a.allow_host))


def add_jobs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="list the job service's jobs (or show one)")
    p.add_argument("job_id", nargs="?", metavar="JOB_ID", help="show this job with its log tail")
    _state_dir_arg(p)
    p.add_argument("--state", help="only jobs in this state (queued, running, failed...)")
    p.add_argument("--limit", type=int, default=20)


def _row(job: dict[str, Any]) -> dict[str, Any]:
    return {"id": job["id"], "type": job["type"], "state": job["state"],
            "progress": f"{job['progress']:.0%}", "message": job["message"],
            "created": job["timings"]["created"], "run_s": job["timings"]["run_s"]}


def run_jobs(a: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Ask the running service; with none running, read the job records directly."""
    import urllib.parse

    from ..errors import GfmError
    from .client import ServiceClient, ServiceUnavailable

    state_dir = Path(a.state_dir or default_state_dir())
    try:
        client = ServiceClient.from_state_dir(state_dir)
        if a.job_id:
            return client.get(f"/jobs/{urllib.parse.quote(a.job_id, safe='')}")
        query = urllib.parse.urlencode({"limit": a.limit, **({"state": a.state} if a.state else {})})
        listing = client.get(f"/jobs?{query}")
        return {"server": client.url, "counts": listing["counts"],
                "jobs": [_row(j) for j in listing["jobs"]]}
    except ServiceUnavailable:
        pass
    from .joblogs import log_tail
    from .store import JobStore

    config = ServiceConfig(state_dir=state_dir)
    if not config.db_path.exists():
        raise GfmError(f"no job service has run with state folder {state_dir} yet (gfm serve)")
    store = JobStore(config.db_path, readonly=True)
    try:
        if a.job_id:
            record = store.get(a.job_id)
            if record is None:
                raise GfmError(f"no job with id {a.job_id!r} in {state_dir}")
            return record.to_json() | {"log_tail": log_tail(config.job_log(record.id), 20),
                                       "server": None}
        return {"server": None, "note": "the service is not running; stored records shown",
                "counts": store.counts(),
                "jobs": [_row(r.to_json()) for r in store.list(a.state, None, a.limit)]}
    finally:
        store.close()


def add_users(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("users", help="people who may use a shared service: a token each")
    actions = p.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a user and print their token (shown only now)")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--admin", action="store_true", help="may see and cancel everyone's jobs")
    remove = actions.add_parser("remove", help="remove a user: their token stops working")
    remove.add_argument("name", metavar="NAME")
    listing = actions.add_parser("list", help="the users (never their tokens)")
    for action in (add, remove, listing):
        _state_dir_arg(action)


def run_users(a: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Edits STATE/users.json; a running server reads it again at its next request."""
    from .users import UserBook

    book = UserBook(ServiceConfig(state_dir=a.state_dir or default_state_dir()).users_path)
    if a.action == "add":
        return {"user": a.name, "admin": a.admin, "token": book.add(a.name, a.admin),
                "note": "give this token to the user now: only its SHA-256 is kept"}
    if a.action == "remove":
        book.remove(a.name)
        return {"removed": a.name}
    return {"users": book.names()}
