"""Reading rasters window by window, in model units, with nodata masks.

Memory stays bounded by the windows in flight: nothing here reads a whole raster.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError, WindowError
from rasterio.windows import Window

from ..errors import InputError
from ..files import refuse_special
from ..package import ModelSpec

# Within this ratio of the model's ground sample distance the raster is used as is.
GSD_TOLERANCE = 1.5


@contextmanager
def open_raster(path: Path | str) -> Iterator[rasterio.DatasetReader]:
    """Open any GDAL-readable raster, turning GDAL errors into a message naming the file."""
    # a GDAL virtual path (/vsicurl?url=..., /vsizip/...) is no file to look for
    path = Path(path) if not str(path).startswith(("/vsi", "http")) else str(path)
    if isinstance(path, Path) and not path.exists():
        raise InputError(path, "raster file does not exist")
    if isinstance(path, Path):
        refuse_special(path)
    try:
        ds = rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(path, f"not a raster GDAL can read ({exc})") from exc
    with ds:
        yield ds


def pixel_size_m(ds: rasterio.DatasetReader) -> float | None:
    """Mean pixel size in metres on the ground, or None when the raster has no CRS to tell.

    The CRS's nominal unit is what a UTM or national grid's pixel size means; where it is
    off by more than 1 % on the ground (Web Mercator, where a "metre" at 60 degrees north
    is half a metre, or degrees), the size measured on the ellipsoid at the centre is used.
    """
    if ds.crs is None:
        return None
    xres, yres = abs(ds.transform.a), abs(ds.transform.e)
    size = math.sqrt(xres * yres)
    ground = _ground_pixel_size(ds)
    if ds.crs.is_geographic:
        lat = (ds.bounds.top + ds.bounds.bottom) / 2
        return ground or size * 111_320.0 * math.sqrt(max(math.cos(math.radians(lat)), 1e-6))
    try:
        factor = ds.crs.linear_units_factor[1]
    except Exception:  # CRS without linear unit information
        factor = 1.0
    nominal = size * factor
    return ground if ground and abs(ground / nominal - 1) > 0.01 else nominal


def _ground_pixel_size(ds: rasterio.DatasetReader) -> float | None:
    """Geodesic width and height of the centre pixel, in metres (None if not computable)."""
    from pyproj import Geod
    from rasterio.warp import transform as warp_points

    cx, cy = ds.width / 2, ds.height / 2
    corners = [ds.transform @ (cx, cy), ds.transform @ (cx + 1, cy), ds.transform @ (cx, cy + 1)]
    try:
        lons, lats = warp_points(ds.crs, "EPSG:4326", [p[0] for p in corners], [p[1] for p in corners])
        geod = Geod(ellps="WGS84")
        dx = geod.inv(lons[0], lats[0], lons[1], lats[1])[2]
        dy = geod.inv(lons[0], lats[0], lons[2], lats[2])[2]
    except Exception:  # a CRS PROJ cannot take to WGS 84
        return None
    size = math.sqrt(abs(dx * dy))
    return size if math.isfinite(size) and size > 0 else None


def default_bands(ds: rasterio.DatasetReader) -> list[int]:
    """RGB models read bands 1-3; a single-band raster is repeated into three."""
    return [1, 2, 3] if ds.count >= 3 else [1, 1, 1]


def check_bands(ds: rasterio.DatasetReader, spec: ModelSpec, path: Path | str) -> None:
    missing = [b for b in spec.bands if b < 1 or b > ds.count]
    if missing:
        raise InputError(
            path,
            f"has {ds.count} band(s) but the model reads bands {spec.bands} "
            f"(missing: {missing})",
        )


def source_scale(ds: rasterio.DatasetReader, spec: ModelSpec) -> tuple[float, str | None]:
    """How many raster pixels make one model pixel, and a warning when resampling is needed."""
    have = pixel_size_m(ds)
    if spec.gsd_m is None or have is None:
        return 1.0, None
    ratio = spec.gsd_m / have
    if 1 / GSD_TOLERANCE <= ratio <= GSD_TOLERANCE:
        return 1.0, None
    return ratio, (
        f"raster pixel size {have:.3g} m differs from the model's {spec.gsd_m:.3g} m; "
        f"tiles are resampled by {1 / ratio:.3g}x before the model sees them"
    )


def whole_pixels(win: Window, eps: float = 1e-6) -> Window:
    """The smallest window of whole pixels holding `win` (a rounding error is no pixel)."""
    c0, r0 = np.floor(win.col_off + eps), np.floor(win.row_off + eps)
    c1 = np.ceil(win.col_off + win.width - eps)
    r1 = np.ceil(win.row_off + win.height - eps)
    return Window(int(c0), int(r0), int(c1 - c0), int(r1 - r0))


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins covering [0, length); the last tile is pulled back to end at the edge."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return sorted(set(starts))


@dataclass(frozen=True)
class Normalizer:
    """Raw band values -> model input: (v - offset) / scale clipped to 0..1, then mean/std.

    Folded into one multiply-add and one clip (in normalised units), since it runs on
    every pixel of every tile.
    """

    gain: np.ndarray
    bias: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> Normalizer:
        def col(v: list[float]) -> np.ndarray:
            return np.asarray(v, dtype=np.float64).reshape(-1, 1, 1)

        offsets, scales = spec.input_scaling()  # both dates' channels for a change pair
        offset, scale = col(offsets), col(scales)
        mean, std = col(list(spec.mean) * spec.inputs), col(list(spec.std) * spec.inputs)
        f32 = np.float32
        return cls(
            (1.0 / (scale * std)).astype(f32), ((-(offset / scale) - mean) / std).astype(f32),
            (-mean / std).astype(f32), ((1.0 - mean) / std).astype(f32),
        )

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        x = raw.astype(np.float32) * self.gain
        x += self.bias
        return np.clip(x, self.lo, self.hi, out=x)


def read_window(
    ds: rasterio.DatasetReader,
    bands: list[int],
    window: Window,
    out_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read `window` (may run past the raster edge) as raw bands plus a validity mask.

    Pixels outside the raster are zero and invalid. With `out_size` the bands are
    resampled (bilinear) to out_size x out_size; the mask stays at the window's size.
    """
    h, w = int(window.height), int(window.width)
    full = Window(0, 0, ds.width, ds.height)
    try:
        inner = window.intersection(full)
    except WindowError:  # wholly off the raster: nothing valid to read
        raw = np.zeros((len(bands), out_size or h, out_size or w), dtype=ds.dtypes[bands[0] - 1])
        return raw, np.zeros((h, w), dtype=bool)
    r0, c0 = int(inner.row_off - window.row_off), int(inner.col_off - window.col_off)
    ih, iw = int(inner.height), int(inner.width)
    raw = np.zeros((len(bands), h, w), dtype=ds.dtypes[bands[0] - 1])
    valid = np.zeros((h, w), dtype=bool)
    try:
        raw[:, r0 : r0 + ih, c0 : c0 + iw] = ds.read(bands, window=inner)
        masks = ds.read_masks(bands, window=inner)
    except RasterioIOError as exc:  # a damaged or truncated file: the user's to fix
        raise InputError(ds.name, f"cannot be read at rows {int(inner.row_off)}-"
                         f"{int(inner.row_off + ih)}, columns {int(inner.col_off)}-"
                         f"{int(inner.col_off + iw)} (damaged or truncated? {exc})") from exc
    valid[r0 : r0 + ih, c0 : c0 + iw] = masks.any(axis=0)
    drop_non_finite(raw, valid)
    if out_size is not None and (h, w) != (out_size, out_size):
        raw = resample_bands(raw, out_size)
    return raw, valid


def percentile_stretch(ds: rasterio.DatasetReader, bands: list[int],
                       size: int = 1024) -> list[tuple[float, float]]:
    """Per band, the 2 and 98 percentiles of the valid, finite pixels of an overview read
    (at most `size` px across): the stretch for types other than uint8. `hi > lo` always."""
    unique = sorted(set(bands))
    f = min(1.0, size / max(ds.width, ds.height))
    shape = (len(unique), max(1, round(ds.height * f)), max(1, round(ds.width * f)))
    sample = ds.read(unique, out_shape=shape, masked=True)
    out = []
    for b in bands:
        v = sample[unique.index(b)].compressed().astype(np.float64)
        v = v[np.isfinite(v)]  # NaN and infinities are nodata, declared or not
        lo, hi = np.percentile(v, [2, 98]) if v.size else (0.0, 1.0)
        out.append((float(lo), float(max(hi, lo + 1e-6))))
    return out


def finite_mask(raw: np.ndarray) -> np.ndarray | None:
    """(h, w) True where every band of `raw` (bands, h, w) is finite; None when all are
    (always for integer types). NaN and infinities are nodata, declared or not."""
    if not np.issubdtype(raw.dtype, np.floating):
        return None
    finite = np.isfinite(raw).all(axis=0)
    return None if finite.all() else finite


def drop_non_finite(raw: np.ndarray, valid: np.ndarray) -> None:
    """Non-finite pixels masked out, and zeroed in place so they never reach the network or
    a blend (one NaN spreads through a whole tile)."""
    finite = finite_mask(raw)
    if finite is not None:
        valid &= finite
        raw[:, ~finite] = 0


def resample_bands(arr: np.ndarray, size: int,
                   method: Resampling = Resampling.bilinear) -> np.ndarray:
    """Resample a (bands, h, w) array to (bands, size, size) in memory, through GDAL's warper."""
    from rasterio.transform import Affine
    from rasterio.warp import reproject

    bands, h, w = arr.shape
    out = np.zeros((bands, size, size), dtype=arr.dtype)
    src_t = Affine.identity()
    dst_t = Affine.scale(w / size, h / size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # identity transforms have no CRS; that is fine here
        reproject(
            arr, out, src_transform=src_t, dst_transform=dst_t, src_crs="EPSG:3857",
            dst_crs="EPSG:3857", resampling=method,
        )
    return out
