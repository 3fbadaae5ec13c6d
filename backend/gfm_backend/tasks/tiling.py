"""Streaming a segmentation-like model over an output grid of any size, tile row by tile row.

Shared by classify (one raster) and change detection (a pair on the earlier date's grid):
the caller says how to read a strip of model input for a window of the grid; tiles are
read one row ahead in a thread, run through the model in batches, blended on
probabilities (`StripBlender`) and written in finished strips on a thread of their own.
Memory is bounded by the tiles in flight, whatever the grid's size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from ..data.raster import Normalizer, resample_bands, tile_starts
from ..data.styles import colormap
from ..package import ClassInfo
from ..progress import Progress
from ..runtime import Predictor
from ..runtime.threads import io_thread
from .blending import ProbsSink, RowSink, StripBlender, blend_weights

CONFIDENCE_NODATA = -1.0
# read_strip(window of the grid) -> (raw bands (C, h, w), valid (h, w))
StripReader = Callable[[Window], tuple[np.ndarray, np.ndarray]]


@dataclass
class Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, dt: float) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + dt


@dataclass(frozen=True)
class Grid:
    """The output rasters' pixel grid: size, CRS and transform."""

    width: int
    height: int
    crs: Any
    transform: rasterio.Affine

    @classmethod
    def of(cls, ds: rasterio.DatasetReader) -> Grid:
        return cls(ds.width, ds.height, ds.crs, ds.transform)


def output_profile(grid: Grid, dtype: str, nodata: float) -> dict[str, Any]:
    """The staged rasters a job writes before they become COGs (which are DEFLATE, read
    by every GIS): ZSTD level 1 compresses these as well as DEFLATE level 1 at half its
    CPU (0.07 against 0.14 s for a 2048 px raster's two), CPU the network needs."""
    return {
        "driver": "GTiff", "dtype": dtype, "count": 1, "width": grid.width,
        "height": grid.height, "crs": grid.crs, "transform": grid.transform, "nodata": nodata,
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "zstd",
        "zstd_level": 1, "predictor": 3 if dtype == "float32" else 2, "BIGTIFF": "IF_SAFER",
    }


class StripWriter:
    """Finished strips of classes and confidence, compressed and written on a thread of
    their own while the next tile row runs through the model (at most one strip waits)."""

    def __init__(self, grid: Grid, classes: list[ClassInfo], classes_tif: Path,
                 confidence_tif: Path) -> None:
        self.width = grid.width
        self.counts = np.zeros(256, dtype=np.int64)
        self.cls = rasterio.open(classes_tif, "w", **output_profile(grid, "uint8", 255))
        self.conf = rasterio.open(confidence_tif, "w",
                                  **output_profile(grid, "float32", CONFIDENCE_NODATA))
        self.cls.write_colormap(1, colormap(classes))
        self.thread = ThreadPoolExecutor(max_workers=1, initializer=io_thread)
        self.pending: list[Future] = []

    def _write(self, top: int, classes: np.ndarray, confidence: np.ndarray) -> None:
        win = Window(0, top, self.width, classes.shape[0])
        self.cls.write(classes, 1, window=win)
        self.conf.write(confidence, 1, window=win)
        self.counts += np.bincount(classes.ravel(), minlength=256)

    def __call__(self, top: int, classes: np.ndarray, confidence: np.ndarray) -> None:
        if self.pending:
            self.pending.pop().result()
        self.pending.append(self.thread.submit(self._write, top, classes, confidence))

    def close(self) -> None:
        try:
            for f in self.pending:
                f.result()
        finally:
            self.thread.shutdown()
            self.cls.close()
            self.conf.close()


def resize_probs(probs: np.ndarray, size: int) -> np.ndarray:
    """Model-resolution probabilities back to the grid's pixels."""
    if probs.shape[-1] == size:
        return probs
    import torch  # only when resampling: the ONNX path otherwise never loads torch
    import torch.nn.functional as F

    t = torch.from_numpy(probs)
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False).numpy()


@dataclass(frozen=True)
class Tiling:
    """Where the tiles go: size and overlap in grid pixels, the model's own tile size."""

    grid: Grid
    src_tile: int
    src_overlap: int
    model_tile: int

    @property
    def rows(self) -> list[int]:
        return tile_starts(self.grid.height, self.src_tile, self.src_tile - self.src_overlap)

    @property
    def cols(self) -> list[int]:
        return tile_starts(self.grid.width, self.src_tile, self.src_tile - self.src_overlap)


def _row_reader(tiling: Tiling, read_strip: StripReader):
    """Tile row -> [(col, raw tile at the model's size, valid mask)]."""
    cols, src_tile = tiling.cols, tiling.src_tile

    def read_row(row: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
        # one read per tile row, sliced into tiles: a read per tile decodes the
        # overlaps twice and costs 2.5x the CPU, which the network needs
        strip, strip_valid = read_strip(Window(0, row, cols[-1] + src_tile, src_tile))
        out = []
        for col in cols:
            raw = strip[:, :, col : col + src_tile]
            if src_tile != tiling.model_tile:
                raw = resample_bands(raw, tiling.model_tile)
            out.append((col, raw, strip_valid[:, col : col + src_tile]))
        return out

    return read_row


@dataclass
class TileRun:
    """One streaming pass: the model side (predictor, input normalisation, batch size)."""

    predictor: Predictor
    normalize: Normalizer
    num_classes: int
    batch_size: int

    @property
    def carries_tiles(self) -> bool:
        """A predictor compiled for one batch size pads every short batch, so a row's last
        tiles wait for the next row's rather than run padded (14 tiles a row in batches of
        8 computed 16). Others run each row's tiles on their own, so that a rank of a run
        over several processes, which starts at a tile row, batches every row as one
        process does: an eager runtime's results can depend on a batch's size."""
        return self.predictor.fixed_batch


@dataclass
class _TileQueue:
    """Tiles waiting for the network, oldest first, and the tile rows they come from."""

    run: TileRun
    blender: StripBlender
    weight: np.ndarray
    src_tile: int
    timer: Timer
    tiles: list[tuple[int, int, np.ndarray, np.ndarray]] = field(default_factory=list)

    def add_row(self, row: int, tiles: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
        self.tiles.extend((row, col, raw, valid) for col, raw, valid in tiles if valid.any())

    def run_batches(self, progress: Progress, everything: bool) -> None:
        """Run full batches (and with `everything`, the short rest), blending each tile as
        its batch returns, in the order the tiles came."""
        size = self.run.batch_size
        while len(self.tiles) >= size or (everything and self.tiles):
            progress.check()
            chunk, self.tiles = self.tiles[:size], self.tiles[size:]
            batch = np.stack([self.run.normalize(raw) for _, _, raw, _ in chunk])
            ti = time.perf_counter()
            probs = self.run.predictor(batch)
            self.timer.add("inference", time.perf_counter() - ti)
            probs = resize_probs(probs, self.src_tile)
            for (row, col, _, valid), p in zip(chunk, probs, strict=True):
                self.blender.add(p, self.weight, valid, row, col)

    def first_waiting_row(self) -> int | None:
        """The top of the highest tile still waiting: rows above it are final."""
        return self.tiles[0][0] if self.tiles else None

    def may_wait(self, row: int) -> bool:
        """Only the current tile row's tiles wait for the next row: the blending band then
        spans at most two tile rows, whatever lies between valid areas (rows of nodata, a
        thin diagonal strip, a batch larger than a row)."""
        first = self.first_waiting_row()
        return first is None or first >= row


def stream_tiles(tiling: Tiling, read_strip: StripReader, run: TileRun, writer: RowSink,
                 progress: Progress, probs_sink: ProbsSink | None = None,
                 run_rows: tuple[int, int] | None = None) -> Timer:
    """Every tile of the grid through the model, blended and handed to `writer` (and the
    blended probabilities to `probs_sink`). `run_rows`: only the tile rows [first, stop)
    of `tiling.rows` (a rank's share); the rows they finish go to `writer` as usual."""
    grid, timer = tiling.grid, Timer()
    rows = tiling.rows
    first, stop = run_rows or (0, len(rows))
    if stop <= first:
        return timer
    blender = StripBlender(grid.width, grid.height, run.num_classes, writer,
                           rows=tiling.src_tile, nodata_confidence=CONFIDENCE_NODATA,
                           probs_sink=probs_sink, top=rows[first])
    queue = _TileQueue(run, blender, blend_weights(tiling.src_tile, tiling.src_overlap),
                       tiling.src_tile, timer)
    read_row = _row_reader(tiling, read_strip)
    with ThreadPoolExecutor(max_workers=1, initializer=io_thread) as reader:
        pending = reader.submit(read_row, rows[first])
        for k in range(first, stop):
            tr = time.perf_counter()
            queue.add_row(rows[k], pending.result())
            timer.add("read_wait", time.perf_counter() - tr)
            if k + 1 < stop:
                pending = reader.submit(read_row, rows[k + 1])
            queue.run_batches(progress, everything=False)
            if k + 1 == stop or not run.carries_tiles or not queue.may_wait(rows[k]):
                queue.run_batches(progress, everything=True)  # the short rest, padded if need be
            # rows above the first waiting tile, and above the next tile row, are final
            done = queue.first_waiting_row()
            until = rows[k + 1] if k + 1 < len(rows) else grid.height
            tw = time.perf_counter()
            blender.finish_until(until if done is None else min(done, until))
            timer.add("blend_write", time.perf_counter() - tw)
            progress((k + 1 - first) / (stop - first), f"tile row {k + 1}/{len(rows)}")
    return timer
