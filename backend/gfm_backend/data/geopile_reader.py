"""GeoPile on disk, and the reader the pretraining loop uses.

Chips are stored decoded, as uint8 `(n, 3, S, S)` arrays in fixed-size `.npy` shards that
are memory-mapped: fetching a batch is one memory copy per chip, with no image decoding
on the training hot path (JPEG/PNG decoding of 192 px chips costs ~0.3-1 ms per chip per
core, which would need dozens of cores to keep a GPU fed). Chip i lives in shard
i // shard_chips at row i % shard_chips; only the last shard may be short.

`pile.json` is the commit point: it lists the shards and how many bytes of the append-only
`chips.jsonl` (line i = provenance of chip i), `hashes.bin` and `sources.jsonl` are valid.
Anything past those lengths is an interrupted build's leftovers and is ignored.
"""

from __future__ import annotations

import json
import mmap
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

FORMAT, VERSION = "gfm-geopile", 1
PILE_JSON, CHIPS_JSONL, SOURCES_JSONL, HASHES_BIN = "pile.json", "chips.jsonl", "sources.jsonl", "hashes.bin"
SHARD_DIR = "shards"
HASH_BYTES = 16
GSD_BANDS = ((0.3, "<0.3 m"), (1.0, "0.3-1 m"), (3.0, "1-3 m"), (10.0, "3-10 m"), (30.0, "10-30 m"))


def shard_file(k: int) -> str:
    return f"{SHARD_DIR}/{k:06d}.npy"


def gsd_band(gsd_m: float | None) -> str:
    """The ground-sample-distance bucket a chip is counted in by `gfm geopile info`."""
    if gsd_m is None:
        return "unknown"
    for limit, name in GSD_BANDS:
        if gsd_m < limit:
            return name
    return ">=30 m"


def read_pile_json(pile_dir: Path | str) -> dict[str, Any]:
    pile_dir = Path(pile_dir)
    if not pile_dir.is_dir():
        raise InputError(pile_dir, "GeoPile folder does not exist")
    path = pile_dir / PILE_JSON
    if not path.exists():
        raise InputError(pile_dir, f"not a GeoPile folder (no {PILE_JSON}); make one with "
                         "`gfm geopile build`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"unreadable GeoPile manifest ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(path, "not a GeoPile manifest")
    if meta.get("version", 0) > VERSION:
        raise InputError(path, f"GeoPile format version {meta['version']} is newer than this gfm reads")
    return meta


def read_committed(path: Path, nbytes: int) -> bytes:
    """The committed prefix of an append-only file (a crashed build may have left more)."""
    if nbytes == 0:
        return b""
    with open(path, "rb") as f:
        data = f.read(nbytes)
    if len(data) != nbytes:
        raise InputError(path, f"truncated: {len(data)} bytes, the manifest says {nbytes}")
    return data


def read_sources(pile_dir: Path, meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Source records by file path; a file processed again (it changed) keeps its latest record."""
    data = read_committed(pile_dir / SOURCES_JSONL, meta["sources_bytes"])
    return {rec["file"]: rec for rec in map(json.loads, data.splitlines())}


def pile_info(pile_dir: Path | str) -> dict[str, Any]:
    """Chips per source dataset and per GSD band, sizes on disk, and the files that failed."""
    pile_dir = Path(pile_dir)
    meta = read_pile_json(pile_dir)
    shard_bytes = sum((pile_dir / s["file"]).stat().st_size for s in meta["shards"])
    manifest_bytes = meta["chips_bytes"] + meta["sources_bytes"] + meta["chips"] * HASH_BYTES
    sources = read_sources(pile_dir, meta)
    failed = [{"file": f, "problem": r["problem"]} for f, r in sources.items() if r["status"] != "ok"]
    return {
        "pile": str(pile_dir), "chips": meta["chips"], "chip_size": meta["chip_size"],
        "shards": len(meta["shards"]), "shard_chips": meta["shard_chips"],
        "sources": {"ok": len(sources) - len(failed), "failed": len(failed)},
        "chips_per_dataset": dict(sorted(meta["per_dataset"].items())),
        "chips_per_gsd": {name: meta["per_gsd"][name] for name in _gsd_order() if name in meta["per_gsd"]},
        "bytes": {"shards": shard_bytes, "manifest": manifest_bytes, "total": shard_bytes + manifest_bytes},
        "builds": meta["builds"], "failed_files": failed,
    }


def _gsd_order() -> list[str]:
    return [name for _, name in GSD_BANDS] + [">=30 m", "unknown"]


@dataclass
class Batch:
    """One step's chips for one rank; save `next_position` in a checkpoint to resume after it."""

    epoch: int
    step: int
    indices: np.ndarray  # int64 chip indices
    images: np.ndarray  # uint8 (B, 3, S, S)

    @property
    def next_position(self) -> tuple[int, int]:
        return self.epoch, self.step + 1


class GeoPile:
    """Random access to a GeoPile's chips: `pile[i]` is a uint8 (3, S, S) array.

    The set of chips is fixed when the pile is opened (a build running meanwhile is not
    seen). Shards are memory-mapped on first use; pickling (DataLoader workers) drops the
    maps, so every process maps the files itself instead of copying them.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.meta = read_pile_json(self.path)
        self._len = int(self.meta["chips"])
        if self._len == 0:
            raise InputError(self.path, "GeoPile has no chips yet (build found no usable imagery)")
        self.chip_size = int(self.meta["chip_size"])
        self.shard_chips = int(self.meta["shard_chips"])
        self._maps: dict[int, np.ndarray] = {}
        self._lines: tuple[mmap.mmap, np.ndarray] | None = None

    @property
    def fingerprint(self) -> str:
        """Identifies this pile at this size: a resume position is only valid for the same value."""
        return f"{self.meta['id']}:{self._len}"

    def __len__(self) -> int:
        return self._len

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_maps": {}, "_lines": None}

    def _shard(self, k: int) -> np.ndarray:
        arr = self._maps.get(k)
        if arr is None:
            entry = self.meta["shards"][k]
            path = self.path / entry["file"]
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise InputError(path, f"unreadable GeoPile shard ({exc})") from exc
            s = self.chip_size
            if arr.dtype != np.uint8 or arr.shape[1:] != (3, s, s) or arr.shape[0] < entry["chips"]:
                raise InputError(path, f"shard holds {arr.dtype} {arr.shape}, pile.json expects "
                                 f"uint8 ({entry['chips']}, 3, {s}, {s})")
            arr = self._maps[k] = arr[: entry["chips"]]
        return arr

    def _locate(self, i: int) -> tuple[int, int]:
        i = int(i)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"chip {i} out of range for a GeoPile of {self._len}")
        return divmod(i, self.shard_chips)

    def __getitem__(self, i: int) -> np.ndarray:
        k, j = self._locate(i)
        return np.array(self._shard(k)[j])

    def get_batch(self, indices: Sequence[int] | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Chips as one uint8 (B, 3, S, S) array; `out` may be a pinned buffer to fill."""
        s = self.chip_size
        if out is None:
            out = np.empty((len(indices), 3, s, s), dtype=np.uint8)
        for n, i in enumerate(indices):
            k, j = self._locate(i)
            out[n] = self._shard(k)[j]
        return out

    def epoch_order(self, epoch: int, seed: int = 0) -> np.ndarray:
        """All chip indices in this epoch's shuffled order (the same on every rank)."""
        return np.random.default_rng([seed, epoch]).permutation(self._len)

    def rank_indices(self, rank: int, world: int, epoch: int, seed: int = 0) -> np.ndarray:
        """This rank's disjoint share of the epoch: every world-th chip of the shuffled order."""
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world}")
        return self.epoch_order(epoch, seed)[rank::world]

    def steps_per_epoch(self, batch_size: int, world: int = 1) -> int:
        """Full batches per rank per epoch, the same on every rank (DDP ranks must step together)."""
        return (self._len // world) // batch_size

    def batch_indices(self, batch_size: int, rank: int = 0, world: int = 1, epoch: int = 0,
                      seed: int = 0, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """(step, indices) for steps start..steps_per_epoch-1 of this rank's share of the epoch."""
        mine = self.rank_indices(rank, world, epoch, seed)
        for step in range(start, self.steps_per_epoch(batch_size, world)):
            yield step, mine[step * batch_size : (step + 1) * batch_size]

    def batches(self, batch_size: int, rank: int = 0, world: int = 1, epoch: int = 0, seed: int = 0,
                start: int = 0, prefetch: int = 0) -> Iterator[Batch]:
        """This rank's batches of one epoch from step `start` on (a resume position's step).

        With `prefetch` > 0 a background thread reads that many batches ahead (numpy copies
        release the GIL, so reading overlaps the training step).
        """
        steps = self.batch_indices(batch_size, rank, world, epoch, seed, start)
        made = (Batch(epoch, step, idx, self.get_batch(idx)) for step, idx in steps)
        yield from (_prefetched(made, prefetch) if prefetch > 0 else made)

    def provenance(self, i: int) -> dict[str, Any]:
        """Where chip i came from: file, dataset, window (col, row, width, height), crs, bounds, gsd_m."""
        k, j = self._locate(i)
        index = k * self.shard_chips + j
        if self._lines is None:
            nbytes = self.meta["chips_bytes"]
            with open(self.path / CHIPS_JSONL, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            ends = np.flatnonzero(np.frombuffer(mm, dtype=np.uint8, count=nbytes) == ord("\n"))
            self._lines = (mm, np.concatenate([[0], ends + 1]))
        mm, starts = self._lines
        return json.loads(mm[starts[index] : starts[index + 1]])


def _prefetched(items: Iterator[Batch], depth: int) -> Iterator[Batch]:
    """Run a generator in a thread, `depth` items ahead; errors are re-raised in the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer
            put(exc)

    thread = threading.Thread(target=work, daemon=True, name="geopile-prefetch")
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
