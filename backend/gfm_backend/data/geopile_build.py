"""GeoPile builder: walk a folder, cut chips (rules in `geopile_rules.py`), deduplicate, write shards.

Files are cut in worker threads; the main thread deduplicates, appends chips to the current
shard and commits every full shard (shard file, then manifest lines, then pile.json), so a
crash or cancel keeps all committed work and the next build carries on where it stopped.
Files already in the pile (same path, size and modification time) are not read again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.errors import NotGeoreferencedWarning

from ..atomic import atomic_path, write_text_atomic
from ..errors import GfmError, InputError
from ..progress import Progress, silent
from .geopile_reader import (
    CHIPS_JSONL,
    FORMAT,
    HASH_BYTES,
    HASHES_BIN,
    PILE_JSON,
    SHARD_DIR,
    SOURCES_JSONL,
    VERSION,
    gsd_band,
    read_committed,
    read_pile_json,
    read_sources,
    shard_file,
)
from .geopile_rules import Cut, CutRules, Task, safe_cut

IMAGE_SUFFIXES = {".tif", ".tiff", ".jp2", ".j2k", ".jpf", ".jpx", ".vrt", ".png", ".jpg", ".jpeg"}
# GDAL and GIS sidecars (world files, overviews, masks, metadata): part of an image, not reported.
SIDECAR_SUFFIXES = (".xml", ".ovr", ".msk", ".tfw", ".tifw", ".tiffw", ".jgw", ".jpgw", ".jpegw",
                    ".pgw", ".pngw", ".j2w", ".wld", ".prj", ".rrd", ".rde", ".aux")
LOCK = ".lock"
PILE_NAMES = {PILE_JSON, CHIPS_JSONL, SOURCES_JSONL, HASHES_BIN, SHARD_DIR, LOCK}
DROP_REASONS = ("nodata", "blank", "duplicate")


class PileWriter:
    """Appends chips to a pile; `commit` writes the shard, then manifest lines, then pile.json."""

    def __init__(self, root: Path, chip: int, shard_chips: int) -> None:
        self.root = root
        if (root / PILE_JSON).exists():
            self.meta = read_pile_json(root)
            if self.meta["chip_size"] != chip:
                raise InputError(root, f"this GeoPile holds {self.meta['chip_size']} px chips; build it "
                                 f"with --chip {self.meta['chip_size']} or into another folder")
        else:
            leftovers = sorted(p.name for p in root.iterdir() if p.name not in PILE_NAMES)
            if leftovers:
                raise InputError(root, f"folder is not empty ({', '.join(leftovers[:3])}...) and is not a "
                                 "GeoPile; choose a new or empty folder")
            self.meta = {
                "format": FORMAT, "version": VERSION, "id": uuid.uuid4().hex, "chip_size": chip,
                "channels": 3, "dtype": "uint8", "layout": "NCHW", "shard_chips": shard_chips,
                "chips": 0, "shards": [], "chips_bytes": 0, "sources_bytes": 0,
                "per_dataset": {}, "per_gsd": {}, "sources": {"ok": 0, "failed": 0}, "builds": 0,
                "history": [],
            }
        self._discard_uncommitted()
        # file -> (size, mtime_ns, ok): all an incremental build needs, small for 600k files
        self.sources = {f: (r["size"], r["mtime_ns"], r["status"] == "ok")
                        for f, r in read_sources(root, self.meta).items()}
        hashes = read_committed(root / HASHES_BIN, self.meta["chips"] * HASH_BYTES)
        self.hashes = {hashes[i : i + HASH_BYTES] for i in range(0, len(hashes), HASH_BYTES)}
        c, s = self.meta["shard_chips"], chip
        self.buf = np.empty((c, 3, s, s), dtype=np.uint8)  # pages are only touched when filled
        self.k, self.n = len(self.meta["shards"]), 0
        shards = self.meta["shards"]
        if shards and shards[-1]["chips"] < c:  # top up the short last shard: shards stay fixed-size
            self.k, self.n = self.k - 1, shards[-1]["chips"]
            self.buf[: self.n] = np.load(root / shards[-1]["file"], mmap_mode="r")[: self.n]
        self.lines: list[str] = []
        self.new_hashes: list[bytes] = []
        self.done: list[dict[str, Any]] = []
        self.tallies: dict[str, Counter[str]] = {"per_dataset": Counter(), "per_gsd": Counter()}

    def _discard_uncommitted(self) -> None:
        """Cut the append-only files back to their committed length; drop unlisted shard files."""
        committed = {CHIPS_JSONL: self.meta["chips_bytes"], SOURCES_JSONL: self.meta["sources_bytes"],
                     HASHES_BIN: self.meta["chips"] * HASH_BYTES}
        for name, nbytes in committed.items():
            with open(self.root / name, "ab") as f:
                f.truncate(nbytes)
        (self.root / SHARD_DIR).mkdir(exist_ok=True)
        listed = {s["file"] for s in self.meta["shards"]}
        for p in (self.root / SHARD_DIR).iterdir():
            if f"{SHARD_DIR}/{p.name}" not in listed:
                p.unlink()

    def is_new(self, path: Path, stamp: tuple[int, int]) -> bool:
        """Not in the pile yet, or changed since (size, mtime_ns differ)."""
        rec = self.sources.get(str(path))
        return rec is None or rec[:2] != stamp

    def add(self, chip: np.ndarray, prov: dict[str, Any], digest: bytes) -> bool:
        """Append one chip unless the pile already holds an identical one."""
        if digest in self.hashes:
            return False
        self.hashes.add(digest)
        self.buf[self.n] = chip
        self.n += 1
        self.lines.append(json.dumps({"i": self.meta["chips"] + len(self.lines)} | prov))
        self.new_hashes.append(digest)
        self.tallies["per_dataset"][prov["dataset"]] += 1
        self.tallies["per_gsd"][gsd_band(prov["gsd_m"])] += 1
        if self.n == self.meta["shard_chips"]:
            self.commit()
        return True

    def finish_source(self, record: dict[str, Any]) -> None:
        """Record a finished file; it is committed with (after) the shard that holds its chips."""
        self.sources[record["file"]] = (record["size"], record["mtime_ns"], record["status"] == "ok")
        self.done.append(record)

    def commit(self, history: dict[str, Any] | None = None) -> None:
        meta = self.meta
        if self.lines:
            with atomic_path(self.root / shard_file(self.k), suffix=".npy", fsync=True) as tmp:
                np.save(tmp, self.buf[: self.n])
            meta["chips_bytes"] += _append(self.root / CHIPS_JSONL, "".join(x + "\n" for x in self.lines))
            _append(self.root / HASHES_BIN, b"".join(self.new_hashes))
            del meta["shards"][self.k :]
            meta["shards"].append({"file": shard_file(self.k), "chips": self.n})
            meta["chips"] += len(self.lines)
            for key, counts in self.tallies.items():
                meta[key] = dict(Counter(meta[key]) + counts)
                counts.clear()
        if self.done:
            meta["sources_bytes"] += _append(self.root / SOURCES_JSONL,
                                             "".join(json.dumps(r) + "\n" for r in self.done))
        failed = sum(not r[2] for r in self.sources.values())
        meta["sources"] = {"ok": len(self.sources) - failed, "failed": failed}
        if history is not None:
            meta["builds"] += 1
            meta["history"].append(history)
        write_text_atomic(self.root / PILE_JSON, json.dumps(meta, indent=1))
        self.lines, self.new_hashes, self.done = [], [], []
        if self.n == meta["shard_chips"]:
            self.k, self.n = self.k + 1, 0


def _append(path: Path, data: str | bytes) -> int:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with open(path, "ab") as f:
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    return len(raw)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    fd = os.open(root / LOCK, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise GfmError(f"{root}: another `gfm geopile build` is writing this GeoPile") from None
    try:
        yield
    finally:
        os.close(fd)


def walk(src: Path, exclude: Path) -> tuple[list[Path], list[Path]]:
    """Image files and unsupported files under src, sorted (hidden entries and the pile skipped)."""
    images: list[Path] = []
    unsupported: list[Path] = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and Path(root, d) != exclude)
        for name in sorted(files):
            low = name.lower()
            if name.startswith(".") or low.endswith(SIDECAR_SUFFIXES):
                continue
            (images if Path(low).suffix in IMAGE_SUFFIXES else unsupported).append(Path(root, name))
    return images, unsupported


def _ordered(tasks: deque[Task], fn: Callable[[Task], Cut], workers: int,
             follow: Callable[[Task, Cut], list[Task]]) -> Iterator[tuple[Task, Cut]]:
    """Results in task order, computed up to 2 x workers ahead; follow-ups run right after their task.

    The order never depends on thread timing or the worker count, so chip indices are
    reproducible.
    """
    pool = ThreadPoolExecutor(workers, thread_name_prefix="geopile") if workers > 1 else None
    futures: dict[Task, Future | Cut] = {}
    try:
        while tasks:
            for t in islice(tasks, 2 * workers if pool else 1):
                if t not in futures:
                    futures[t] = pool.submit(fn, t) if pool else fn(t)
            task = tasks.popleft()
            done = futures.pop(task)
            result = done.result() if isinstance(done, Future) else done
            tasks.extendleft(reversed(follow(task, result)))
            yield task, result
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class BuildOptions:
    src: Path
    out: Path
    rules: CutRules = field(default_factory=CutRules)
    dataset: str | None = None  # default: the first folder below src
    shard_chips: int = 1024
    workers: int = 1


def build(opts: BuildOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Add the new and changed image files under opts.src to the pile at opts.out."""
    progress = progress or silent()
    t0 = time.perf_counter()
    src, out = Path(opts.src).resolve(), Path(opts.out).resolve()
    if not src.is_dir():
        raise InputError(opts.src, "source folder does not exist" if not src.exists() else "is not a folder")
    if src == out:
        raise InputError(opts.out, "the GeoPile cannot be written into its own source folder")
    out.mkdir(parents=True, exist_ok=True)
    stats: Counter = Counter()
    with _locked(out), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        writer = PileWriter(out, opts.rules.chip, opts.shard_chips)
        images, unsupported = walk(src, exclude=out)
        skipped = [{"file": str(p), "problem": f"unsupported file type ({p.suffix or 'no extension'})"}
                   for p in unsupported]
        todo: dict[Path, tuple[int, int]] = {}
        for p in images:
            try:
                st = p.stat()
            except OSError as exc:  # vanished or unreadable since the walk
                skipped.append({"file": str(p), "problem": f"cannot stat ({exc.strerror})"})
                continue
            if writer.is_new(p, (st.st_size, st.st_mtime_ns)):
                todo[p] = (st.st_size, st.st_mtime_ns)
        progress(0.0, f"{len(todo)} new or changed of {len(images)} image files")
        try:
            _process(opts, src, todo, writer, stats, skipped, progress)
        finally:
            writer.commit(history={
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "src": str(src), "chip": opts.rules.chip,
                "bands": opts.rules.bands, "min_valid": opts.rules.min_valid,
                "blank_std": opts.rules.blank_std, "files_processed": stats["files"],
                "chips_added": stats["added"],
            })
    return {
        "pile": str(out), "source": str(src), "chip_size": opts.rules.chip,
        "files_found": len(images), "files_processed": len(todo), "files_unchanged": len(images) - len(todo),
        "chips_added": stats["added"], "chips_total": writer.meta["chips"],
        "dropped": {r: stats[r] for r in DROP_REASONS}, "skipped": skipped,
        "time_s": round(time.perf_counter() - t0, 2),
    }


def _process(opts: BuildOptions, src: Path, todo: dict[Path, tuple[int, int]], writer: PileWriter,
             stats: Counter, skipped: list[dict[str, str]], progress: Progress) -> None:
    tasks = deque(Task(p, opts.dataset or _dataset(p, src)) for p in todo)
    rules = opts.rules

    def follow(task: Task, cut: Cut) -> list[Task]:
        if task.part or cut.error:
            return []
        return [Task(task.file, task.dataset, p, cut.info) for p in range(1, cut.n_parts)]

    record: dict[str, Any] = {}
    n_parts = 1
    for task, cut in _ordered(tasks, lambda t: safe_cut(t, rules), max(1, opts.workers), follow):
        if task.part == 0:
            (size, mtime_ns), n_parts = todo[task.file], cut.n_parts
            record = {"file": str(task.file), "dataset": task.dataset, "size": size,
                      "mtime_ns": mtime_ns, "status": "ok", "problem": None} | cut.info | {
                      "chips": 0, "dropped": dict.fromkeys(DROP_REASONS, 0)}
        if cut.error:  # a later part failing keeps the chips of the parts before it
            record |= {"status": "failed", "problem": cut.error}
            skipped.append({"file": str(task.file), "problem": cut.error})
        for chip, prov, digest in zip(cut.chips, cut.prov, cut.hashes, strict=True):
            if writer.add(chip, prov, digest):
                record["chips"] += 1
            else:
                record["dropped"]["duplicate"] += 1
        for reason, n in cut.dropped.items():
            record["dropped"][reason] += n
        finished = task.part == n_parts - 1 or (task.part == 0 and cut.error is not None)
        if finished:
            writer.finish_source(record)
            stats["files"] += 1
            stats["added"] += record["chips"]
            for reason in DROP_REASONS:
                stats[reason] += record["dropped"][reason]
        done = stats["files"] if finished else stats["files"] + (task.part + 1) / n_parts
        progress(done / max(1, len(todo)), f"{stats['files']}/{len(todo)} files, {stats['added']} chips")


def _dataset(path: Path, src: Path) -> str:
    """The first folder below the source folder (the GeoPile release has one per dataset)."""
    parts = path.relative_to(src).parts
    return parts[0] if len(parts) > 1 else src.name

