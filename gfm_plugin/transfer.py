"""Downloads that survive a broken connection and never leave a half file under its name.

Standard library only (it runs in QgsTask threads and in tests without QGIS)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

CHUNK = 1 << 20
ATTEMPTS = 5


def _sha256(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    if path.exists():
        with path.open("rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
    return digest


def fetch_resumable(open_from: Callable[[int], Any], dest: Path, size: int, sha256: str,
                    on_bytes: Callable[[int, int], None] | None = None) -> Path:
    """`open_from(offset)` answers the bytes from `offset` on (HTTP Range). The bytes go to
    `dest.partial`; a broken read is resumed where it stopped (a few times), and `dest`
    appears only with the listed size and SHA-256. A file already at `dest` with that hash
    is kept as it is; one with other content is never replaced."""
    from .client import BackendError

    if dest.exists():
        if _sha256(dest).hexdigest() == sha256:
            return dest
        raise BackendError(f"{dest} exists and is another file; it was not replaced")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    digest = _sha256(partial)  # what a broken earlier download left
    for _attempt in range(ATTEMPTS):
        have = partial.stat().st_size if partial.exists() else 0
        if have >= size:
            break
        try:
            with open_from(have) as resp, partial.open("ab") as out:
                if have and getattr(resp, "status", 206) != 206:  # the server sent it whole
                    out.truncate(0)
                    digest, have = hashlib.sha256(), 0
                _copy(resp, out, digest, have, size, on_bytes)
        except (OSError, BackendError) as exc:
            if isinstance(exc, BackendError) and exc.status is not None:
                raise
            continue
    return _finish(partial, dest, size, sha256, digest)


def _copy(resp: IO[bytes], out: IO[bytes], digest: Any, have: int, size: int,
          on_bytes: Callable[[int, int], None] | None) -> None:
    while block := resp.read(CHUNK):
        out.write(block)
        digest.update(block)
        have += len(block)
        if on_bytes is not None:
            on_bytes(have, size)


def _finish(partial: Path, dest: Path, size: int, sha256: str, digest: Any) -> Path:
    from .client import BackendError

    got = partial.stat().st_size if partial.exists() else 0
    if got != size:
        raise BackendError(f"download of {dest.name} stopped at {got} of {size} bytes; try "
                           "again to resume it")
    if digest.hexdigest() != sha256:
        partial.unlink()
        raise BackendError(f"{dest.name} arrived damaged (SHA-256 differs); it was deleted, "
                           "try again")
    os.replace(partial, dest)
    return dest
