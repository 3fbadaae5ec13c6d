"""HTTP downloads of large checkpoints that survive broken connections.

The bytes go to a `.part` file with a small state file beside it (address, the server's
validator, the total size); a broken connection, a cancel or a closed laptop lid resumes
from there (`Range` with `If-Range`, so a file changed on the server starts over). Only
pip-free standard-library HTTP is used, so proxies come from the usual environment
variables. The caller checks size and hash and moves the finished file into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..atomic import write_text_atomic
from ..errors import GfmError, InputError
from ..progress import Progress

CHUNK = 1 << 20
RETRIES = 5
_SHA256 = re.compile(r'^"?([0-9a-f]{64})"?$')


class Interrupted(Exception):
    """The server closed the connection before the last byte."""


@dataclass
class PartState:
    url: str
    validator: str | None = None  # ETag or Last-Modified: If-Range resumes only the same file
    total: int | None = None
    published_sha256: str | None = None  # the Hugging Face Hub sends it as X-Linked-Etag


@dataclass(frozen=True)
class Fetched:
    path: Path
    size: int
    sha256: str
    published_sha256: str | None


def _state_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _load_state(part: Path, url: str) -> PartState:
    """The state of an earlier attempt at the same address; a stale `.part` is dropped."""
    try:
        state = PartState(**json.loads(_state_path(part).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        state = None
    if state is None or state.url != url or not part.exists():
        discard(part)
        return PartState(url)
    return state


def discard(part: Path) -> None:
    """Remove a partial download and its state."""
    for path in (part, _state_path(part)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def fetch(url: str, part: Path, progress: Progress, *, timeout_s: float = 30.0,
          retries: int = RETRIES, backoff_s: float = 1.0) -> Fetched:
    """Download `url` into `part`, resuming what an earlier attempt left there."""
    part.parent.mkdir(parents=True, exist_ok=True)
    state = _load_state(part, url)
    failures = 0
    while True:
        before = _size(part)
        try:
            if _attempt(url, part, state, progress, timeout_s):
                break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and state.total is not None and _size(part) == state.total:
                break  # everything was already here
            if exc.code < 500 and exc.code not in (408, 429):
                discard(part)
                raise InputError(url, f"the server answered HTTP {exc.code} ({exc.reason})") from None
            failure: BaseException = exc
        except (urllib.error.URLError, OSError, http.client.HTTPException, Interrupted) as exc:
            if _size(part) == 0 and before == 0 and not isinstance(exc, Interrupted):
                raise _unreachable(url, exc) from None
            failure = exc
        failures = 0 if _size(part) > before else failures + 1
        if failures > retries:
            raise GfmError(f"{url}: the download broke off at {_size(part)} bytes ({failure}); run "
                           "the same command again to resume") from None
        time.sleep(min(backoff_s * 2 ** failures, 30.0))
    return Fetched(part, _size(part), sha256_of(part, progress), state.published_sha256)


def _unreachable(url: str, exc: BaseException) -> GfmError:
    reason = getattr(exc, "reason", exc)
    return GfmError(f"cannot reach {url} ({reason}): is this machine offline? Download the file "
                    "on a machine that can, then `gfm weights import FILE --name NAME`")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _attempt(url: str, part: Path, state: PartState, progress: Progress, timeout_s: float) -> bool:
    """One request; True when the file is complete."""
    have = _size(part)
    request = urllib.request.Request(url, headers={"User-Agent": f"gfm-qgis/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
        if state.validator:
            request.add_header("If-Range", state.validator)
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (http/https)
        if response.status != 206:
            have = 0  # the whole file again (no range support, or it changed)
        elif _range_start(response.headers) != have:
            raise Interrupted(f"the server resumed at the wrong byte ({response.headers})")
        _remember(part, state, response.headers, have)
        with part.open("ab" if have else "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                have += len(chunk)
                progress(have / state.total if state.total else 0.0, _done_text(have, state.total))
    if state.total is not None and have < state.total:
        raise Interrupted(f"connection closed after {have} of {state.total} bytes")
    return True


def _range_start(headers: Any) -> int | None:
    found = re.match(r"bytes (\d+)-", headers.get("Content-Range", ""))
    return int(found.group(1)) if found else None


def _remember(part: Path, state: PartState, headers: Any, offset: int) -> None:
    length = headers.get("Content-Length")
    total = re.search(r"/(\d+)$", headers.get("Content-Range", ""))
    state.total = int(total.group(1)) if total else (offset + int(length) if length else None)
    state.validator = headers.get("ETag") or headers.get("Last-Modified")
    linked = _SHA256.match((headers.get("X-Linked-Etag") or "").lower())
    state.published_sha256 = linked.group(1) if linked else state.published_sha256
    write_text_atomic(_state_path(part), json.dumps(asdict(state)))


def _done_text(have: int, total: int | None) -> str:
    mb = 1 << 20
    return f"{have / mb:.0f} of {total / mb:.0f} MB" if total else f"{have / mb:.0f} MB"


def copy_with_sha256(source: Path, target: Path, progress: Progress) -> str:
    """Copy a file and hash it in the same pass (a checkpoint is read once, not twice)."""
    digest = hashlib.sha256()
    total = max(source.stat().st_size, 1)
    done = 0
    with source.open("rb") as src, target.open("wb") as out:
        while block := src.read(CHUNK * 8):
            out.write(block)
            digest.update(block)
            done += len(block)
            progress(done / total, _done_text(done, total))
    return digest.hexdigest()


def sha256_of(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK * 8):
            digest.update(block)
            if progress is not None:
                progress.check()
    return digest.hexdigest()
