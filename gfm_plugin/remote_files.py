"""A remote backend sees none of this machine's files: the inputs a job names go up first
(`POST /files`, resumable, skipped when the server has the content already) and its
results come down into the local results folder (`GET /jobs/{id}/files/...`).

Standard library only: it runs in QgsTask threads."""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from .client import BackendClient, BackendError

CHUNK = 8 << 20
ATTEMPTS = 5
# files GDAL reads beside a raster or a shapefile: they travel with it, zipped
SIDECARS = (".aux.xml", ".ovr", ".msk", ".prj", ".shx", ".dbf", ".cpg", ".qix", ".sbn", ".sbx",
            ".tfw", ".wld")
Progress = Callable[[int, int], None]  # (bytes done, bytes in all); may raise to stop


def sidecars(path: Path) -> list[Path]:
    """The files that belong with `path` (`scene.tif.aux.xml`, `roads.dbf`, ...)."""
    found = []
    for suffix in SIDECARS:
        for candidate in (path.with_name(path.name + suffix), path.with_suffix(suffix)):
            if candidate.is_file() and candidate != path and candidate not in found:
                found.append(candidate)
    return found


def sha256_file(path: Path, on_bytes: Progress | None = None) -> str:
    digest, done, size = hashlib.sha256(), 0, path.stat().st_size
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
            done += len(block)
            if on_bytes is not None:
                on_bytes(done, size)
    return digest.hexdigest()


def bundle(path: Path) -> tuple[Path, bool]:
    """The file to send: `path` itself, or a zip of it with its sidecars (stored, not
    compressed: imagery is compressed already). True when the zip is ours to delete."""
    extra = sidecars(path)
    if not extra:
        return path, False
    fd, name = tempfile.mkstemp(prefix=f"{path.stem}-", suffix=".zip")
    os.close(fd)
    with zipfile.ZipFile(name, "w", zipfile.ZIP_STORED) as zf:
        for member in [path, *extra]:
            zf.write(member, member.name)
    return Path(name), True


def upload(client: BackendClient, path: Path, on_bytes: Progress | None = None) -> dict:
    """Send one file (with its sidecars); `{"id", "sha256", "size", ...}` of the upload."""
    sent, ours = bundle(path)
    try:
        return _upload_file(client, sent, path.name if not ours else f"{path.stem}.zip", on_bytes)
    finally:
        if ours:
            sent.unlink(missing_ok=True)


def _upload_file(client: BackendClient, path: Path, name: str, on_bytes: Progress | None) -> dict:
    size = path.stat().st_size
    sha = sha256_file(path)
    state = client.request_raw("POST", "/files", b"", {
        "X-Filename": name, "X-Sha256": sha, "Content-Range": f"bytes */{size}",
        "Content-Type": "application/octet-stream"})
    for _attempt in range(ATTEMPTS):
        if state.get("complete"):
            if on_bytes is not None:
                on_bytes(size, size)
            return state
        try:
            state = _send_from(client, path, state, on_bytes)
        except BackendError as exc:
            if exc.status is not None:
                raise
            state = client.request_raw("GET", f"/files/{state['id']}")  # what arrived
    raise BackendError(f"the upload of {name} kept breaking off; try again to resume it")


def _send_from(client: BackendClient, path: Path, state: dict, on_bytes: Progress | None) -> dict:
    size, start = int(state["size"]), int(state["received"])
    with path.open("rb") as f:
        f.seek(start)
        while start < size:
            block = f.read(CHUNK)
            end = start + len(block)
            state = client.request_raw("PUT", f"/files/{state['id']}", block, {
                "Content-Range": f"bytes {start}-{end - 1}/{size}",
                "Content-Type": "application/octet-stream"})
            start = int(state["received"])
            if on_bytes is not None:
                on_bytes(start, size)
    return state


def download_all(client: BackendClient, job_id: str, folder: Path,
                 on_bytes: Progress | None = None) -> dict[str, str]:
    """Every file of a succeeded job into `folder` (resumed where a broken download
    stopped); `{name: local path}`."""
    entries = client.job_files(job_id)
    total = sum(int(e["size"]) for e in entries)
    done = 0
    local: dict[str, str] = {}
    for entry in entries:
        def progress(got: int, _size: int, base: int = done) -> None:
            if on_bytes is not None:
                on_bytes(base + got, total)

        local[entry["name"]] = str(client.download(job_id, entry, folder / entry["name"], progress))
        done += int(entry["size"])
    return local
