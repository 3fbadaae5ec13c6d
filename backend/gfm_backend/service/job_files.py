"""A finished job's files, as the API lists and serves them (`GET /jobs/{id}/files`).

Only what the job wrote is listed: the files of its output folder's manifest (the
output-folder rule keeps anybody else's files out of it), or the `files` its outputs
name. A client on another machine fetches results, reports and plots through these
routes, so it never needs the server's disk.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..outputs import inspect
from ..weights.download import sha256_of
from .jobs import JobTypeError, get_job_type
from .store import SUCCEEDED, JobRecord


class JobFilesError(Exception):
    """The job has no files to list (yet), or no file of that name: 404 or 409."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class JobFile:
    name: str  # relative to the output folder, "/" between parts
    path: Path


def job_files(record: JobRecord) -> list[JobFile]:
    """The files a succeeded job wrote that still exist, sorted by name."""
    if record.state != SUCCEEDED:
        raise JobFilesError(409, f"job {record.id} is {record.state}; only a succeeded job's "
                            "files can be listed")
    folder = _output_folder(record)
    if folder is not None:
        found = _manifest_files(folder)
    else:
        named = (record.outputs or {}).get("files") or {}
        found = [JobFile(str(k), Path(v)) for k, v in named.items() if isinstance(v, str)]
    return sorted((f for f in found if f.path.is_file()), key=lambda f: f.name)


def job_file(record: JobRecord, name: str) -> JobFile:
    """One listed file by name; a name that is not listed is a 404 (never a path on disk)."""
    for entry in job_files(record):
        if entry.name == name:
            return entry
    raise JobFilesError(404, f"job {record.id} has no file {name!r} (GET /jobs/{record.id}/files "
                        "lists them)")


def _output_folder(record: JobRecord) -> Path | None:
    try:
        job_type = get_job_type(record.type)
    except JobTypeError:
        return None
    folder = job_type.writes(record.params)
    return Path(folder) if folder and job_type.output is not None else None


def _manifest_files(folder: Path) -> list[JobFile]:
    contents = inspect(folder)
    files: list[JobFile] = []
    for name in contents.ours:
        entry = folder / name
        if entry.is_dir():  # a folder the kind writes (a pretraining run's checkpoints)
            files += [JobFile(str(PurePosixPath(name, *p.relative_to(entry).parts)), p)
                      for p in sorted(entry.rglob("*")) if p.is_file() and not p.is_symlink()]
        else:
            files.append(JobFile(name, entry))
    return files


class HashCache:
    """SHA-256 of files by (path, size, mtime): a file is read once, not on every listing."""

    def __init__(self, limit: int = 4096) -> None:
        self._known: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()
        self._limit = limit

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._known:
                return self._known[key]
        digest = sha256_of(path)
        with self._lock:
            if len(self._known) >= self._limit:
                self._known.clear()
            self._known[key] = digest
        return digest
