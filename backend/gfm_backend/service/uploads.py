"""Files a client sends the service (`POST /files`), for jobs on a machine that does not
share the client's disk.

Content-addressed: a finished upload lives at `uploads/blobs/<sha256>/<name>` (the
name kept, since GDAL picks its driver by it), and each upload id is a small record
naming its blob. An upload arrives in one request or in several, each carrying
`Content-Range: bytes START-END/TOTAL`; until the last byte it is staged in
`uploads/partial/<id>/` and can be resumed after a broken connection from the size that
arrived (`GET /files/{id}` says it). A zip is unpacked beside itself, so a GeoTIFF with
its `.aux.xml`/`.ovr`, or a shapefile's parts, reach the job as the files GDAL expects.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from ..atomic import write_text_atomic
from .users import Caller

MAIN_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2", ".gpkg", ".shp", ".geojson", ".json",
                 ".fgb", ".kml", ".gml")
UNZIPPED = "unzipped"
_ID = re.compile(r"^[0-9a-f]{32}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


class UploadError(Exception):
    """A refused upload: `status` is the HTTP answer (400, 404, 409, 413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    id: str
    name: str
    size: int  # the whole file's size (the total the client announced)
    received: int
    sha256: str | None  # known once complete (or announced by the client)
    created: float
    complete: bool = False
    owner: str | None = None

    def public(self) -> dict:
        return {"id": self.id, "name": self.name, "size": self.size, "received": self.received,
                "sha256": self.sha256, "complete": self.complete}


def safe_name(name: str | None) -> str:
    """The base name of `X-Filename`, refusing what cannot be a file name."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    if not base or base in (".", "..") or any(ord(c) < 32 for c in base):
        raise UploadError(400, f"X-Filename: give the file's name (got {name!r})")
    return base[:200]


class UploadStore:
    def __init__(self, root: Path, max_bytes: int | None = None,
                 quota_bytes: int | None = None) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.quota_bytes = quota_bytes  # per user: the sum of their uploads
        for sub in ("blobs", "partial", "ids"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    # -- records -------------------------------------------------------------------
    def _record_path(self, upload_id: str) -> Path:
        if not _ID.match(upload_id):
            raise UploadError(404, f"no upload with id {upload_id!r}")
        return self.root / "ids" / f"{upload_id}.json"

    def get(self, upload_id: str, caller: Caller | None = None) -> Upload:
        """An upload by id; another user's is a 404, as if it did not exist."""
        path = self._record_path(upload_id)
        try:
            upload = Upload(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            upload = None
        if upload is None or (caller is not None and not caller.may_see(upload.owner)):
            raise UploadError(404, f"no upload with id {upload_id!r} (POST /files makes one)")
        return upload

    def _save(self, upload: Upload) -> None:
        write_text_atomic(self._record_path(upload.id), json.dumps(asdict(upload)))

    def blob(self, upload: Upload) -> Path:
        assert upload.sha256 is not None
        return self.root / "blobs" / upload.sha256 / upload.name

    # -- starting ----------------------------------------------------------------
    def start(self, name: str | None, total: int, sha256: str | None,
              owner: str | None = None) -> Upload:
        """A new upload of `total` bytes; refused beyond the size limit (413)."""
        if sha256 is not None and not _SHA.match(sha256):
            raise UploadError(400, "X-Sha256: give the file's SHA-256 as 64 hexadecimal digits")
        if self.max_bytes is not None and total > self.max_bytes:
            raise UploadError(413, f"the file is {total} bytes; this service takes uploads of "
                              f"at most {self.max_bytes} bytes")
        self._check_quota(owner, total)
        upload = Upload(uuid.uuid4().hex, safe_name(name), total, 0, sha256, time.time(),
                        owner=owner)
        (self.root / "partial" / upload.id).mkdir()
        self._save(upload)
        return upload

    def known(self, name: str | None, sha256: str, owner: str | None = None) -> Upload | None:
        """Content the service has already: a new id for it at once, no bytes sent."""
        if not _SHA.match(sha256):
            raise UploadError(400, "X-Sha256: give the file's SHA-256 as 64 hexadecimal digits")
        folder = self.root / "blobs" / sha256
        existing = next((p for p in sorted(folder.iterdir()) if p.is_file()), None) \
            if folder.is_dir() else None
        if existing is None:
            return None
        upload = Upload(uuid.uuid4().hex, safe_name(name), existing.stat().st_size,
                        existing.stat().st_size, sha256, time.time(), complete=True, owner=owner)
        target = self.blob(upload)
        if not target.exists():
            os.link(existing, target)
        self._save(upload)
        return upload

    def _check_quota(self, owner: str | None, total: int) -> None:
        if self.quota_bytes is None:
            return
        used = sum(u.size for u in self.owned_by(owner))
        if used + total > self.quota_bytes:
            raise UploadError(413, f"your uploads take {used / 2**30:.2f} GB; with this file "
                              f"({total / 2**30:.2f} GB) they would pass this service's limit of "
                              f"{self.quota_bytes / 2**30:.2f} GB per user: delete some "
                              "(DELETE /files/{id}) or wait for the cleanup")

    def owned_by(self, owner: str | None) -> list[Upload]:
        found = []
        for path in sorted((self.root / "ids").glob("*.json")):
            try:
                upload = Upload(**json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                continue
            if upload.owner == owner:
                found.append(upload)
        return found

    def delete(self, upload_id: str, caller: Caller | None = None) -> None:
        """Forget an upload; its content goes when no other upload names it (the cleanup
        removes unnamed blobs, and never one a job uses)."""
        self.discard(self.get(upload_id, caller))

    # -- receiving ---------------------------------------------------------------
    def partial_file(self, upload: Upload) -> Path:
        return self.root / "partial" / upload.id / "data"

    def check_range(self, upload: Upload, start: int, total: int) -> None:
        if upload.complete:
            raise UploadError(409, f"upload {upload.id} is complete already")
        if total != upload.size:
            raise UploadError(400, f"Content-Range: the total is {upload.size} bytes, not {total}")
        if start != upload.received:
            raise UploadError(409, f"upload {upload.id} has {upload.received} bytes; send from "
                              f"byte {upload.received} on")

    def received(self, upload: Upload) -> Upload:
        """Note what arrived (also after a broken request); finish when it is all there."""
        if upload.complete:
            return upload
        part = self.partial_file(upload)
        upload.received = part.stat().st_size if part.exists() else 0
        if upload.received > upload.size:
            self.discard(upload)
            raise UploadError(400, f"more bytes arrived than the {upload.size} announced; the "
                              "upload was discarded, start again")
        if upload.received == upload.size:
            return self._finish(upload)
        self._save(upload)
        return upload

    def _finish(self, upload: Upload) -> Upload:
        part = self.partial_file(upload)
        digest = _sha256(part)
        if upload.sha256 is not None and digest != upload.sha256:
            self.discard(upload)
            raise UploadError(400, f"{upload.name}: the SHA-256 of what arrived is {digest}, not "
                              f"{upload.sha256}; the upload was discarded, send it again")
        upload.sha256, upload.complete = digest, True
        target = self.blob(upload)
        target.parent.mkdir(exist_ok=True)
        if target.exists():
            part.unlink()
        else:
            os.replace(part, target)
        shutil.rmtree(part.parent, ignore_errors=True)
        self._save(upload)
        return upload

    def discard(self, upload: Upload) -> None:
        shutil.rmtree(self.root / "partial" / upload.id, ignore_errors=True)
        self._record_path(upload.id).unlink(missing_ok=True)

    # -- using ---------------------------------------------------------------------
    def path_for_job(self, upload_id: str, caller: Caller | None = None) -> Path:
        """The path a job reads: the file, or for a zip the main dataset unpacked from it."""
        upload = self.get(upload_id, caller)
        if not upload.complete:
            raise UploadError(409, f"upload {upload_id} is not complete ({upload.received} of "
                              f"{upload.size} bytes); finish it first")
        path = self.blob(upload)
        if path.suffix.lower() != ".zip":
            return path
        return _main_dataset(_unzip(path, path.parent / UNZIPPED / path.stem))


def _sha256(path: Path) -> str:
    from ..weights.download import sha256_of

    return sha256_of(path) if path.exists() else hashlib.sha256().hexdigest()


def _unzip(archive: Path, folder: Path) -> Path:
    """Unpack once (a folder renamed into place), refusing members that leave the folder."""
    if folder.is_dir():
        return folder
    stage = folder.with_name(folder.name + ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                parts = PurePosixPath(member.filename).parts
                if member.filename.startswith("/") or ".." in parts:
                    raise UploadError(400, f"{archive.name}: member {member.filename!r} would "
                                      "be written outside the upload; refused")
            zf.extractall(stage)
    except zipfile.BadZipFile as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise UploadError(400, f"{archive.name}: not a readable zip ({exc})") from exc
    os.replace(stage, folder)
    return folder


def _main_dataset(folder: Path) -> Path:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for suffix in MAIN_SUFFIXES:
        found = [p for p in files if p.suffix.lower() == suffix and not p.name.endswith(".aux.xml")]
        if found:
            return found[0]
    raise UploadError(400, f"{folder.name}.zip holds no raster or vector file GDAL reads "
                      f"({', '.join(MAIN_SUFFIXES)})")
