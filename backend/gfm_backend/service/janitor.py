"""Cleanup on a shared server (`gfm serve --keep-days N`): uploads nobody used for N days
and the outputs of jobs that ended N days ago go; never what a queued or running job
uses, and never anything outside the service's own uploads and outputs folders (a job's
output in the data root is the user's)."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from .config import ServiceConfig
from .store import FINISHED, QUEUED, RUNNING, JobStore

log = logging.getLogger(__name__)
SWEEP_EVERY_S = 3600.0


def _active_paths(store: JobStore) -> set[Path]:
    """Every path a queued or running job names (its inputs and its output)."""
    paths: set[Path] = set()
    for state in (QUEUED, RUNNING):
        for record in store.list(state, None, 100_000):
            for value in record.params.values():
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, str) and item.startswith("/"):
                        paths.add(Path(item))
    return paths


def _in_use(folder: Path, active: set[Path]) -> bool:
    return any(p == folder or folder in p.parents for p in active)


def sweep(config: ServiceConfig, store: JobStore, keep_s: float, now: float | None = None
          ) -> dict[str, int]:
    """One pass; what it removed, by kind."""
    now = time.time() if now is None else now
    active = _active_paths(store)
    removed = {"uploads": 0, "blobs": 0, "partial": 0, "outputs": 0}
    uploads = config.uploads_dir
    live_blobs: set[str] = set()
    for record_path in sorted((uploads / "ids").glob("*.json")) if uploads.is_dir() else []:
        record = _read(record_path)
        blob = uploads / "blobs" / str(record.get("sha256"))
        if now - float(record.get("created", now)) > keep_s and not _in_use(blob, active):
            record_path.unlink(missing_ok=True)
            shutil.rmtree(uploads / "partial" / record_path.stem, ignore_errors=True)
            removed["uploads"] += 1
        elif record.get("sha256"):
            live_blobs.add(str(record["sha256"]))
    for blob in _children(uploads / "blobs"):
        if blob.name not in live_blobs and not _in_use(blob, active):
            shutil.rmtree(blob, ignore_errors=True)
            removed["blobs"] += 1
    for part in _children(uploads / "partial"):
        if now - part.stat().st_mtime > keep_s and not (uploads / "ids" / f"{part.name}.json").exists():
            shutil.rmtree(part, ignore_errors=True)
            removed["partial"] += 1
    removed["outputs"] = _sweep_outputs(config, store, keep_s, now, active)
    return removed


def _sweep_outputs(config: ServiceConfig, store: JobStore, keep_s: float, now: float,
                   active: set[Path]) -> int:
    """Folders the service picked for `{"output": NAME}`, once their job ended long ago."""
    ended: dict[Path, float] = {}
    for record in store.list(None, None, 100_000):
        out = record.params.get("out")
        if isinstance(out, str) and record.state in FINISHED:
            ended[Path(out).parent] = record.finished_at or record.updated_at
    count = 0
    for folder in _children(config.outputs_dir):
        finished = ended.get(folder)
        if finished is not None and now - finished > keep_s and not _in_use(folder, active):
            shutil.rmtree(folder, ignore_errors=True)
            count += 1
    return count


def _children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def start(config: ServiceConfig, store: JobStore, keep_days: float) -> threading.Thread:
    """Sweep now and then every hour, in a thread of its own."""
    def loop() -> None:
        while True:
            try:
                removed = sweep(config, store, keep_days * 86400)
                if any(removed.values()):
                    log.info("cleanup (--keep-days %g): removed %s", keep_days, removed)
            except Exception:  # cleanup must never take the service down
                log.exception("cleanup failed; trying again in an hour")
            time.sleep(SWEEP_EVERY_S)

    thread = threading.Thread(target=loop, daemon=True, name="gfm-janitor")
    thread.start()
    return thread
