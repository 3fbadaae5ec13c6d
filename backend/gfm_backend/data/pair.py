"""Two dates on one grid: AFTER warped onto BEFORE's pixels, window by window.

The two images of a change pair rarely share a grid: another CRS, pixel size, extent or
band order. The result of change detection is on BEFORE's grid; AFTER is seen through a
GDAL warped VRT with BEFORE's CRS and transform, so each window read warps only that
window (never the whole image). Only where the two overlap is processed: `Pair.window`
is that part of BEFORE, and a pair that does not overlap is refused naming both files.
A pair already on one grid (same CRS, pixel size and alignment, any extents) is read
without the warper.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds
from rasterio.windows import transform as window_transform

from ..errors import InputError
from .raster import open_raster, read_window, whole_pixels

MIN_OVERLAP_PX = 8  # less than this in either direction is no overlap worth a model run
RGB = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)


@dataclass
class Pair:
    """BEFORE, AFTER on BEFORE's grid, the overlap window and which bands to read."""

    before: rasterio.DatasetReader
    after: rasterio.DatasetReader | WarpedVRT
    window: Window  # the overlap, in BEFORE's pixels
    before_bands: list[int]
    after_bands: list[int]
    after_offset: tuple[int, int] = (0, 0)  # BEFORE's pixel (0, 0) in AFTER's pixels

    @property
    def transform(self) -> rasterio.Affine:
        """The overlap's own transform (BEFORE's pixels, its origin at the overlap)."""
        return window_transform(self.window, self.before.transform)

    def read(self, window: Window, out_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Both dates for `window` (BEFORE's pixels): bands (2 x bands, h, w) stacked BEFORE
        then AFTER, valid where both dates have data inside the overlap."""
        raw_b, valid_b = read_window(self.before, self.before_bands, window, out_size)
        dc, dr = self.after_offset
        shifted = Window(window.col_off + dc, window.row_off + dr, window.width, window.height)
        raw_a, valid_a = read_window(self.after, self.after_bands, shifted, out_size)
        if raw_a.dtype != raw_b.dtype:
            raw_a, raw_b = raw_a.astype(np.float32), raw_b.astype(np.float32)
        return np.concatenate([raw_b, raw_a]), valid_b & valid_a & self._inside(window)

    def read_overlap(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """`read` for a window of the overlap's own grid (origin at the overlap)."""
        return self.read(Window(window.col_off + self.window.col_off,
                                window.row_off + self.window.row_off, window.width, window.height))

    def _inside(self, window: Window) -> np.ndarray:
        """Pixels of `window` (BEFORE's pixels) that lie inside the overlap."""
        rows = np.arange(int(window.height)) + int(window.row_off) - int(self.window.row_off)
        cols = np.arange(int(window.width)) + int(window.col_off) - int(self.window.col_off)
        return (((rows >= 0) & (rows < self.window.height))[:, None]
                & ((cols >= 0) & (cols < self.window.width))[None, :])


def overlap_window(before: rasterio.DatasetReader, after: rasterio.DatasetReader,
                   before_path: Path | str, after_path: Path | str) -> Window:
    """The part of BEFORE that AFTER covers (whole pixels), or a message naming both."""
    for ds, path in ((before, before_path), (after, after_path)):
        if ds.crs is None:
            raise InputError(path, "has no coordinate reference system: the two dates cannot be "
                             "placed on one grid (assign its CRS in QGIS or with gdal_edit.py)")
    left, bottom, right, top = transform_bounds(after.crs, before.crs, *after.bounds, densify_pts=21)
    b = before.bounds
    box = (max(left, b.left), max(bottom, b.bottom), min(right, b.right), min(top, b.top))
    if box[0] < box[2] and box[1] < box[3]:
        win = whole_pixels(from_bounds(*box, transform=before.transform))
        win = win.intersection(Window(0, 0, before.width, before.height))
        if win.width >= MIN_OVERLAP_PX and win.height >= MIN_OVERLAP_PX:
            return Window(int(win.col_off), int(win.row_off), int(win.width), int(win.height))
    raise InputError(before_path, f"and {after_path} do not overlap (BEFORE covers "
                     f"{_extent(b)}, AFTER {_extent((left, bottom, right, top))}, both in "
                     f"{before.crs.to_string()}): choose two images of the same place")


def _extent(bounds: tuple[float, float, float, float] | rasterio.coords.BoundingBox) -> str:
    left, bottom, right, top = bounds
    return f"x {left:.6g}..{right:.6g}, y {bottom:.6g}..{top:.6g}"


def match_after_bands(before: rasterio.DatasetReader, after: rasterio.DatasetReader,
                      before_bands: list[int], after_path: Path | str,
                      given: list[int] | None = None) -> list[int]:
    """AFTER's bands in BEFORE's order: given, else matched by colour interpretation (an
    RGB and a BGR file pair up), else the same band numbers."""
    if given is None:
        by_colour = {c: i + 1 for i, c in enumerate(after.colorinterp) if c in RGB}
        wanted = [before.colorinterp[b - 1] for b in before_bands]
        if all(c in RGB for c in wanted) and all(c in by_colour for c in wanted):
            given = [by_colour[c] for c in wanted]
        else:
            given = list(before_bands)
    if len(given) != len(before_bands):
        raise InputError(after_path, f"give {len(before_bands)} after-bands (one per band of "
                         f"BEFORE that the model reads), got {given}")
    missing = [b for b in given if not 1 <= b <= after.count]
    if missing:
        raise InputError(after_path, f"has {after.count} band(s); no band {missing[0]} "
                         "(set --after-bands)")
    return given


def same_grid_offset(before: rasterio.DatasetReader, after: rasterio.DatasetReader,
                     tolerance: float = 1e-6) -> tuple[int, int] | None:
    """Where BEFORE's first pixel is in AFTER's pixels, when both share one CRS, pixel size
    and pixel alignment (AFTER is then read as it is: no warp); None otherwise."""
    a, b = after.transform, before.transform
    if after.crs != before.crs or not np.allclose(
            (a.a, a.b, a.d, a.e), (b.a, b.b, b.d, b.e), rtol=0, atol=tolerance * abs(b.a)):
        return None
    col, row = ~a * (b.c, b.f)
    if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
        return None
    return int(round(col)), int(round(row))


@contextmanager
def open_pair(before_path: Path | str, after_path: Path | str, before_bands: list[int],
              after_bands: list[int] | None = None) -> Iterator[Pair]:
    """Open both dates; AFTER is warped onto BEFORE's grid on the fly (bilinear)."""
    with ExitStack() as stack:
        before = stack.enter_context(open_raster(before_path))
        after_src = stack.enter_context(open_raster(after_path))
        window = overlap_window(before, after_src, before_path, after_path)
        bands = match_after_bands(before, after_src, before_bands, after_path, after_bands)
        offset = same_grid_offset(before, after_src)
        if offset is not None:  # one grid (shifted by whole pixels): no warp at all
            yield Pair(before, after_src, window, list(before_bands), bands, offset)
            return
        # without a nodata value an alpha band says where AFTER's footprint ends
        after = stack.enter_context(WarpedVRT(
            after_src, crs=before.crs, transform=before.transform, width=before.width,
            height=before.height, resampling=Resampling.bilinear,
            add_alpha=after_src.nodata is None))
        yield Pair(before, after, window, list(before_bands), bands)
