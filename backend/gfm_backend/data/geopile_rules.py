"""GeoPile chip rules: one source image -> uint8 RGB chips with provenance (used by the builder).

These are the rules the README states; they run in the builder's worker threads (GDAL
decodes and numpy converts with the GIL released), one file or one band of chip rows at a time.

- Band choice: `bands` (1-based; three, or one for grey) where the file has them; else the
  bands tagged red/green/blue; else the first three non-alpha bands. One or two image bands:
  band 1 as grey (R = G = B), or its colour table when it has one.
- Values: uint8 as is; any other type by a per-image 2-98 % stretch per band, measured on
  valid pixels of a <= 1024 px overview read and recorded with the source.
- Geometry: an image whose shorter side is under 2 chips becomes one chip (its centred
  square, bilinear-resized); larger ones are cut into chip x chip windows at native
  resolution, the last row and column pulled back to the edge; images under half a chip
  are skipped.
- Dropped here: chips with less than `min_valid` valid pixels (nodata, alpha, masks) and
  blank chips (every channel's std below `blank_std`). Duplicates are dropped by the builder.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds

from ..errors import InputError
from .geopile_reader import HASH_BYTES
from .raster import finite_mask, open_raster, percentile_stretch, pixel_size_m, tile_starts

RGB = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)


@dataclass(frozen=True)
class CutRules:
    chip: int = 192
    bands: tuple[int, ...] | None = None
    min_valid: float = 0.75
    blank_std: float = 2.0
    part_chips: int = 256  # chips per work item: bounds memory on huge rasters


@dataclass(eq=False)
class Task:
    file: Path
    dataset: str
    part: int = 0
    info: dict[str, Any] | None = None  # from part 0, so later parts skip the stretch measurement


@dataclass
class Cut:
    info: dict[str, Any] = field(default_factory=dict)
    n_parts: int = 1
    chips: list[np.ndarray] = field(default_factory=list)
    prov: list[dict[str, Any]] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    error: str | None = None


def describe(ds: rasterio.DatasetReader, rules: CutRules) -> dict[str, Any]:
    """Band choice, value scaling and georeferencing of a source, as recorded in sources.jsonl."""
    interp = list(ds.colorinterp)
    image = [i + 1 for i, c in enumerate(interp) if c != ColorInterp.alpha] or [1]
    if rules.bands and max(rules.bands) <= ds.count:
        bands, rule = list(rules.bands) * (3 if len(rules.bands) == 1 else 1), "chosen bands"
    elif len(image) >= 3 and all(c in interp for c in RGB):
        bands, rule = [interp.index(c) + 1 for c in RGB], "red, green, blue"
    elif len(image) >= 3:
        bands, rule = image[:3], "first three bands"
    elif interp[image[0] - 1] == ColorInterp.palette and ds.dtypes[image[0] - 1] == "uint8":
        bands, rule = [image[0]], "colour table"
    else:
        bands, rule = [image[0]] * 3, "grey"
    dtype = ds.dtypes[bands[0] - 1]
    crs = None
    if ds.crs is not None:
        epsg = ds.crs.to_epsg()
        crs = f"EPSG:{epsg}" if epsg else ds.crs.to_wkt()
    return {
        "driver": ds.driver, "width": ds.width, "height": ds.height, "count": ds.count, "dtype": dtype,
        "crs": crs, "georeferenced": not ds.transform.is_identity, "gsd_m": _sig(pixel_size_m(ds)),
        "bands": bands, "rule": rule,
        "stretch": None if dtype == "uint8" else [list(p) for p in percentile_stretch(ds, bands)],
    }


def _sig(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.4g}")


def cut_part(task: Task, rules: CutRules) -> Cut:
    """Chips of one part of one file (a whole small image, or a band of chip rows)."""
    s = rules.chip
    with open_raster(task.file) as ds:
        short = min(ds.width, ds.height)
        if short < s // 2:
            raise InputError(task.file, f"{ds.width} x {ds.height} px is smaller than half a chip "
                             f"({s // 2} px)")
        info = task.info or describe(ds, rules)
        lut = _palette(ds, info["bands"][0]) if info["rule"] == "colour table" else None
        if short < 2 * s:
            n_parts = 1
            win = Window((ds.width - short) // 2, (ds.height - short) // 2, short, short)
            pieces = _read_resized(ds, info, lut, win, s)
        else:
            rows, cols = tile_starts(ds.height, s, s), tile_starts(ds.width, s, s)
            per = max(1, rules.part_chips // len(cols))
            n_parts = math.ceil(len(rows) / per)
            pieces = _read_rows(ds, info, lut, rows[task.part * per : (task.part + 1) * per], cols, s)
        cut = Cut(info, n_parts)
        for win, chip, valid in pieces:
            reason = _drop_reason(chip, valid, rules)
            if reason:
                cut.dropped[reason] += 1
                continue
            cut.chips.append(chip)
            cut.hashes.append(hashlib.blake2b(chip.data, digest_size=HASH_BYTES).digest())
            cut.prov.append(_provenance(task, info, ds.transform, win, s))
    return cut


def _palette(ds: rasterio.DatasetReader, band: int) -> np.ndarray:
    lut = np.zeros((256, 3), dtype=np.uint8)
    for k, rgba in ds.colormap(band).items():
        if 0 <= k < 256:
            lut[k] = rgba[:3]
    return lut


def _all_valid(ds: rasterio.DatasetReader, bands: list[int]) -> bool:
    return all(MaskFlags.all_valid in ds.mask_flag_enums[b - 1] for b in bands)


def _read_rows(ds, info, lut, rows, cols, s) -> Iterator[tuple[Window, np.ndarray, np.ndarray | None]]:
    """Native-resolution windows, one full-width strip of chip rows per read (cheap on any layout)."""
    ub = sorted(set(info["bands"]))
    masked = not _all_valid(ds, ub)
    for r in rows:
        strip = Window(0, r, ds.width, s)
        raw = ds.read(ub, window=strip)
        valid = ds.read_masks(ub, window=strip).any(axis=0) if masked else None
        valid = _and_finite(raw, valid)
        rgb = _to_rgb8(raw, info, lut)
        for c in cols:
            chip = np.ascontiguousarray(rgb[:, :, c : c + s])
            yield Window(c, r, s, s), chip, None if valid is None else valid[:, c : c + s]


def _read_resized(ds, info, lut, win, s) -> Iterator[tuple[Window, np.ndarray, np.ndarray | None]]:
    ub = sorted(set(info["bands"]))
    method = Resampling.nearest if lut is not None else Resampling.bilinear
    raw = ds.read(ub, window=win, out_shape=(len(ub), s, s), resampling=method)
    valid = None
    if not _all_valid(ds, ub):
        valid = ds.read_masks(ub, window=win, out_shape=(len(ub), s, s)).any(axis=0)
    valid = _and_finite(raw, valid)
    yield win, np.ascontiguousarray(_to_rgb8(raw, info, lut)), valid


def _and_finite(raw: np.ndarray, valid: np.ndarray | None) -> np.ndarray | None:
    finite = finite_mask(raw)
    if finite is None:
        return valid
    return finite if valid is None else valid & finite


def _to_rgb8(raw: np.ndarray, info: dict[str, Any], lut: np.ndarray | None) -> np.ndarray:
    """(unique bands, h, w) as read -> (3, h, w) uint8 by the source's band choice and stretch."""
    if lut is not None:
        return np.moveaxis(lut[raw[0]], -1, 0)
    ub = sorted(set(info["bands"]))
    x = raw[[ub.index(b) for b in info["bands"]]]
    if info["stretch"] is None:
        return x
    st = np.asarray(info["stretch"], dtype=np.float32)
    lo, hi = st[:, 0].reshape(3, 1, 1), st[:, 1].reshape(3, 1, 1)
    y = (x.astype(np.float32) - lo) * (255.0 / (hi - lo))
    np.nan_to_num(y, copy=False, posinf=255.0, neginf=0.0)
    np.clip(y, 0.0, 255.0, out=y)
    return (y + 0.5).astype(np.uint8)


def _drop_reason(chip: np.ndarray, valid: np.ndarray | None, rules: CutRules) -> str | None:
    """'nodata' or 'blank' when the chip is not worth keeping; zeroes invalid pixels of kept chips."""
    pixels = chip.reshape(3, -1)
    if valid is not None:
        frac = float(valid.mean())
        if frac < rules.min_valid:
            return "nodata"
        if frac < 1.0:
            chip[:, ~valid] = 0
            pixels = chip[:, valid]
    if pixels.astype(np.float32).std(axis=1).max() < rules.blank_std:
        return "blank"
    return None


def _provenance(task: Task, info: dict[str, Any], transform, win: Window, s: int) -> dict[str, Any]:
    gsd = info["gsd_m"]
    return {
        "file": str(task.file), "dataset": task.dataset,
        "window": [int(win.col_off), int(win.row_off), int(win.width), int(win.height)],
        "crs": info["crs"],
        "bounds": list(window_bounds(win, transform)) if info["georeferenced"] else None,
        "gsd_m": _sig(gsd * win.width / s) if gsd else None,
    }


def safe_cut(task: Task, rules: CutRules) -> Cut:
    """Never raises for a bad file: the problem is returned, named, and the build goes on."""
    try:
        return cut_part(task, rules)
    except InputError as exc:
        return Cut(error=exc.problem)
    except Exception as exc:  # GDAL and decoder errors come in many types; one file never stops a build
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""  # GDAL's own message, e.g. a missing file
        return Cut(error=f"{type(exc).__name__}: {exc}{cause}")
