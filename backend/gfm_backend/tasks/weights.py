"""`gfm weights`: fetch, import, list and remove the encoder weights a backend keeps.

Every file is checked before it is kept: size and SHA-256 where they are known, then
loaded the way `load_encoder` and the pretraining teacher load it, and refused with a
message naming what it is when it is not the Swin its name promises. A refused or
broken file leaves nothing behind; an interrupted download resumes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from ..errors import GfmError, InputError
from ..progress import Progress
from ..weights.catalog import CATALOG, CatalogEntry, catalog_entry
from ..weights.download import Fetched, copy_with_sha256, discard, fetch
from ..weights.store import WeightsStore, check_name
from .params import WeightsGetParams, WeightsImportParams

if TYPE_CHECKING:  # identify reads files with torch: imported when a file is checked, so
    from ..weights.identify import Identity  # the service's checks and listings stay light


def list_weights(store: WeightsStore | None = None) -> dict[str, Any]:
    """What is installed, and what the catalog offers (marked where installed)."""
    store = store or WeightsStore.default()
    installed = store.records()
    names = {r.get("catalog") for r in installed} | {r["name"] for r in installed}
    return {"store": str(store.root), "installed": installed,
            "catalog": [e.describe() | {"installed": e.name in names} for e in CATALOG]}


def weights_source(params: WeightsGetParams) -> tuple[str, str, str, CatalogEntry | None]:
    """(name, address, file name, catalog entry) of a `get`."""
    entry = catalog_entry(params.source)
    if entry is not None:
        url = params.mirror or entry.url
        if url is None:
            raise GfmError(f"{entry.title} is published at {entry.page}, which needs a browser: "
                           f"download {entry.filename} there, then run `gfm weights import "
                           f"{entry.filename}` (or give a mirror with --from URL)")
        return params.name or entry.name, url, entry.filename, entry
    if params.mirror:
        raise GfmError(f"--from: gives a mirror for a catalog entry; {params.source!r} is not one")
    if not re.match(r"^https?://", params.source):
        known = ", ".join(e.name for e in CATALOG)
        raise InputError(params.source, f"is neither a catalog name ({known}) nor an http(s) "
                         "address")
    filename = Path(unquote(urlparse(params.source).path)).name or "weights.pth"
    return params.name or _name_from(filename), params.source, filename, None


def _name_from(filename: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(filename).stem).strip("-.") or "weights"
    return stem[:64]


def get_weights(params: WeightsGetParams, progress: Progress,
                store: WeightsStore | None = None) -> dict[str, Any]:
    store = store or WeightsStore.default()
    name, url, filename, entry = weights_source(params)
    if (record := store.record(check_name(name))) is not None:
        return record | {"already_installed": True}
    part = store.staging(name) / (filename + ".part")
    progress(0.0, f"downloading {url}")
    try:
        fetched = fetch(url, part, progress.span(0.0, 0.95))
        expected = params.sha256 or (entry.sha256 if entry else None) or fetched.published_sha256
        try:
            _check_download(fetched, expected, entry, url)
            identity = _verified(part, entry, name, url)
        except GfmError:
            discard(part)
            raise
        record = _record(filename, fetched.size, fetched.sha256, url, identity, entry,
                         checked=bool(expected))
        progress(0.97, "installing")
        installed = store.install(name, part, record)
        discard(part)
    finally:
        store.clear_staging(name)  # once empty: a download to resume keeps it
    progress(1.0, f"installed {name}")
    return installed


def _check_download(fetched: Fetched, expected: str | None, entry: CatalogEntry | None,
                    url: str) -> None:
    if entry is not None and entry.size is not None and fetched.size != entry.size:
        raise InputError(url, f"is {fetched.size} bytes, but {entry.name} is published as "
                         f"{entry.size}: the download is incomplete or not that file")
    if expected and fetched.sha256 != expected.lower():
        raise InputError(url, f"has SHA-256 {fetched.sha256}, expected {expected.lower()}: the "
                         "file is damaged or not the one published")


def _verified(path: Path, entry: CatalogEntry | None, name: str, source: str) -> Identity:
    """Load the file as the loaders will; refuse it when it is not what `entry` names."""
    from ..weights.identify import check_expected, identify

    try:
        identity = identify(path)
    except InputError as exc:
        raise InputError(source, exc.problem) from None
    if entry is not None:
        check_expected(identity, entry.architecture, name, source)
    return identity


def _record(filename: str, size: int, sha256: str, source: str, identity: Identity,
            entry: CatalogEntry | None, checked: bool) -> dict[str, Any]:
    record: dict[str, Any] = {
        "file": filename, "size": size, "sha256": sha256, "sha256_checked": checked,
        "source": source, "title": entry.title if entry else identity.what,
        **identity.describe()}
    if entry is not None:
        record |= {"catalog": entry.name, "licence": entry.licence, "citation": entry.citation}
    return record


def recognise(identity: Identity, filename: str) -> CatalogEntry | None:
    """The catalog entry an imported file is, by its published name and its content."""
    for entry in CATALOG:
        if entry.filename == filename and entry.architecture == identity.architecture \
                and entry.role == identity.role:
            return entry
    return None


def import_weights(params: WeightsImportParams, progress: Progress,
                   store: WeightsStore | None = None) -> dict[str, Any]:
    """Copy a checkpoint the user downloaded into the store (the user's file stays)."""
    from ..weights.identify import identify

    store = store or WeightsStore.default()
    source = Path(params.file)
    identity = identify(source)  # refuse before copying gigabytes
    entry = recognise(identity, source.name)
    name = check_name(params.name or (entry.name if entry else _name_from(source.name)))
    if store.record(name) is not None:
        raise GfmError(f"weights {name!r} are already installed; remove them first "
                       f"(gfm weights remove {name}) or choose another --name")
    staged = store.staging(name) / (source.name + ".part")
    staged.parent.mkdir(parents=True, exist_ok=True)
    progress(0.0, f"copying {source.name}")
    try:
        digest = copy_with_sha256(source, staged, progress.span(0.0, 0.95))
        record = _record(source.name, staged.stat().st_size, digest, f"imported from {source}",
                         identity, entry, checked=False)
        installed = store.install(name, staged, record)
        progress(1.0, f"installed {name}")
        return installed
    finally:
        staged.unlink(missing_ok=True)
        store.clear_staging(name)


def remove_weights(name: str, store: WeightsStore | None = None) -> dict[str, Any]:
    return {"removed": (store or WeightsStore.default()).remove(name)}
