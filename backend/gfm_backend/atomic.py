"""Files and folders that readers never see half written: one writer for all of them.

`atomic_path(path)` hands out a temporary name beside `path` (same folder, so the final
rename never crosses filesystems), renames it over `path` when the block succeeds and
removes it (and the side files some writers leave, such as GeoPackage `-wal`/`-shm` or
an exporter's `.data`) when it fails. Output *folders* follow `outputs.staged_output`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

SIDE_FILES = ("-wal", "-shm", "-journal", ".data", ".aux.xml")


def _remove(path: Path) -> None:
    for suffix in ("", *SIDE_FILES):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            Path(str(path) + suffix).unlink()


@contextlib.contextmanager
def atomic_path(path: Path | str, suffix: str | None = None, private: bool = False,
                fsync: bool = False, exists: bool = True) -> Iterator[Path]:
    """Yield a temporary file name beside `path`; rename it to `path` on success.

    `suffix` keeps the extension some writers need (GDAL picks drivers by it); `private`
    makes the file the user's only (0600) before anything is written to it; `fsync`
    flushes it to the disk before the rename (data a crash must not lose); `exists=False`
    hands out the name with no file behind it (GDAL will not write over an empty file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".partial{suffix or ''}",
                                dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    if private:
        os.chmod(tmp, 0o600)
    if not exists:
        tmp.unlink()
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        _remove(tmp)


@contextlib.contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` (a folder of
    ours, such as a checkpoint, replaced whole)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: Path | str, text: str, private: bool = False) -> None:
    """Write a small text file so readers never see it half written."""
    with atomic_path(path, private=private) as tmp:
        tmp.write_text(text, encoding="utf-8")
