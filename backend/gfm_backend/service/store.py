"""Job records in SQLite: the queue and its history survive restarts and `kill -9`.

Only the server process writes (one connection behind a lock, WAL journal, so status
reads never wait for a writer); `gfm jobs` may open it read-only while no server runs.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED = (
    "queued", "running", "succeeded", "failed", "cancelled", "interrupted")
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)
FINISHED = frozenset({SUCCEEDED, FAILED, CANCELLED, INTERRUPTED})
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    params TEXT NOT NULL,
    resource TEXT NOT NULL,
    resumable INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    outputs TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker_pid INTEGER,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, resource, seq);
"""


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class JobRecord:
    """One job as stored; `to_json` is what the API and `gfm jobs` show."""

    id: str
    type: str
    params: dict[str, Any]
    resource: str
    resumable: bool
    state: str
    progress: float
    message: str
    outputs: dict[str, Any] | None
    cancel_requested: bool
    attempts: int
    worker_pid: int | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    owner: str | None = None  # the user who submitted it (None: before users existed)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def timings(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        run_end = self.finished_at if self.finished_at else now
        return {
            "created": _iso(self.created_at), "started": _iso(self.started_at),
            "finished": _iso(self.finished_at),
            "queued_s": round((self.started_at or (now if self.state == QUEUED else run_end))
                              - self.created_at, 3),
            "run_s": round(run_end - self.started_at, 3) if self.started_at else None,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "type": self.type, "state": self.state,
            "progress": round(self.progress, 4), "message": self.message,
            "outputs": self.outputs, "params": self.params, "resource": self.resource,
            "resumable": self.resumable, "cancel_requested": self.cancel_requested,
            "attempts": self.attempts, "worker_pid": self.worker_pid, "timings": self.timings(),
            "owner": self.owner,
        }


def _printable(value: Any) -> Any:
    """Strings as valid UTF-8: a record stored by an older version with a lone surrogate
    (a Latin-1 file name) is shown with the byte escaped instead of failing every answer."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    return value


def storable(params: dict[str, Any]) -> str:
    """The params as JSON text that can be stored and served back, or a ValueError."""
    text = json.dumps(params, ensure_ascii=False)
    text.encode("utf-8")  # UnicodeEncodeError (a ValueError) for a lone surrogate
    return text


def _record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"], type=row["type"], params=_printable(json.loads(row["params"])),
        resource=row["resource"], resumable=bool(row["resumable"]), state=row["state"],
        progress=row["progress"], message=_printable(row["message"]),
        outputs=_printable(json.loads(row["outputs"])) if row["outputs"] else None,
        cancel_requested=bool(row["cancel_requested"]), attempts=row["attempts"],
        worker_pid=row["worker_pid"], created_at=row["created_at"], started_at=row["started_at"],
        finished_at=row["finished_at"], updated_at=row["updated_at"],
        owner=row["owner"] if "owner" in row.keys() else None,
    )


class JobStore:
    """The jobs table. Every method is one short transaction, safe from any thread."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                       check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._db.execute("PRAGMA busy_timeout = 5000")
        if not readonly:
            # WAL: readers never block on the writer; NORMAL sync is durable against a
            # killed process (only a power cut can lose the last transactions).
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            with self._db:
                self._db.executescript(_SCHEMA)
                columns = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)")}
                if "owner" not in columns:  # a database from before users
                    self._db.execute("ALTER TABLE jobs ADD COLUMN owner TEXT")
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._db:
            yield self._db

    def _update(self, job_id: str, **values: Any) -> None:
        values["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in values)
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*values.values(), job_id))

    def add(self, job_type: str, params: dict[str, Any], resource: str, resumable: bool,
            owner: str | None = None) -> JobRecord:
        now = time.time()
        job_id = uuid.uuid4().hex[:12]
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (id, type, params, resource, resumable, state, message, "
                "created_at, updated_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, job_type, storable(params), resource, int(resumable), QUEUED,
                 "waiting for its turn", now, now, owner))
        record = self.get(job_id)
        assert record is not None
        return record

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _record(row) if row else None

    def list(self, state: str | None = None, job_type: str | None = None,
             limit: int = 100, owner: str | None = None) -> list[JobRecord]:
        """Newest first; `owner`: that user's jobs only."""
        where, args = [], []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if state:
            where.append("state = ?")
            args.append(state)
        if job_type:
            where.append("type = ?")
            args.append(job_type)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [_record(r) for r in rows]

    def next_queued(self, resource: str, exclude: set[str] | None = None,
                    accept: Callable[[JobRecord], bool] | None = None) -> JobRecord | None:
        """The oldest queued job of a resource kind (that `accept`s, e.g. one not pinned to
        another GPU): first come, first served. `exclude`: jobs already started whose new
        state is not written yet."""
        skip = sorted(exclude or ())
        marks = ", ".join("?" * len(skip))
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE state = ? AND resource = ?"
                + (f" AND id NOT IN ({marks})" if skip else "") + " ORDER BY seq"
                + ("" if accept else " LIMIT 1"), (QUEUED, resource, *skip)).fetchall()
        records = (_record(row) for row in rows)
        return next((r for r in records if accept is None or accept(r)), None)

    def mark_running(self, job_id: str, pid: int | None) -> None:
        record = self.get(job_id)
        attempts = (record.attempts if record else 0) + 1
        self._update(job_id, state=RUNNING, started_at=time.time(), finished_at=None,
                     worker_pid=pid, attempts=attempts, progress=0.0, message="starting")

    def set_progress(self, job_id: str, fraction: float, message: str) -> None:
        self._update(job_id, progress=min(max(float(fraction), 0.0), 1.0), message=message)

    def finish(self, job_id: str, state: str, message: str,
               outputs: dict[str, Any] | None = None) -> None:
        assert state in FINISHED
        values: dict[str, Any] = {"state": state, "message": message, "finished_at": time.time(),
                                  "worker_pid": None}
        if state == SUCCEEDED:
            values["progress"] = 1.0
        if outputs is not None:
            values["outputs"] = json.dumps(outputs, default=str)
        self._update(job_id, **values)

    def request_cancel(self, job_id: str) -> None:
        self._update(job_id, cancel_requested=1)

    def requeue(self, job_id: str, params: dict[str, Any], message: str) -> None:
        """Put a finished job back in the queue (resume), keeping its id and history."""
        self._update(job_id, state=QUEUED, params=storable(params), message=message,
                     cancel_requested=0, finished_at=None, worker_pid=None, outputs=None)

    def interrupt_running(self) -> builtins.list[JobRecord]:
        """At startup: jobs a previous server left `running` died with it."""
        records = self.list(state=RUNNING, limit=1_000_000)
        for r in records:
            if r.cancel_requested:
                self.finish(r.id, CANCELLED, "cancelled (the service stopped while cancelling)")
                continue
            how = (f" It can be resumed from its last checkpoint (POST /jobs/{r.id}/resume)."
                   if r.resumable else " Submit it again to redo it.")
            self.finish(r.id, INTERRUPTED,
                        f"interrupted: the service stopped while this job was running "
                        f"(at {r.progress:.0%}).{how}")
        return records

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {state: n for state, n in rows}
