"""Class raster -> polygons.gpkg, block by block, so memory follows the block size, not the raster.

Each block is polygonized with `rasterio.features.shapes` (4-connectivity: pixels that
share only a corner are separate regions, matching GDAL's and rasterio's default). All
geometry work happens in pixel coordinates, where every vertex is an exact integer, so
pieces of one region cut by block seams union exactly; they are mapped to the raster's
CRS only when written. Polygons that touch an interior seam are grouped by shared edges
and unioned, so a region crossing blocks is ONE feature; block row by block row, so a
region is written as soon as no later block can touch it.
Every feature is one connected region, so the layer type is Polygon (never Multi).
The same loop (`polygonize_rows`) runs over a band of block rows in each torchrun rank;
`vectorize_bands` joins the bands.

Memory: one block's polygons, the regions crossing the current seam, and the largest
region once more while it is written. Holes never cross a seam, so merging unions outer
rings only and keeps holes packed (int32 vertices); a region with millions of hole
vertices is encoded ring by ring, never built whole in GEOS.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window

from ..atomic import atomic_path
from ..errors import InputError
from ..package import ClassInfo
from ..progress import Progress, silent
from .areas import PixelAreas
from .gpkg_writer import PolygonWriter, remove_gpkg
from .regions import Regions, keep_large, merge_pieces

# The sieve sees this many pixels around each block. A region under N pixels lies within
# N pixels of the block, so it is found exactly; the extra context makes "merge into the
# largest neighbour" see neighbours nearly whole, so blocks decide like a whole-raster
# sieve (checked: identical results in tests). Capped to bound memory.
MIN_SIEVE_MARGIN = 128
MAX_SIEVE_MARGIN = 512
_CHUNK = 20_000  # shapes converted to shapely at a time
BLOCK_SIZE = 2048  # pixels a side of the blocks polygonized at a time


def vectorize_classes(
    class_tif: Path,
    out_gpkg: Path,
    classes: list[ClassInfo],
    *,
    min_area_m2: float = 0.0,
    simplify_tolerance: float = 0.0,
    nodata: int = 255,
    block_size: int = BLOCK_SIZE,
    skip_classes: frozenset[int] = frozenset(),
    progress: Progress | None = None,
) -> int:
    """Write one polygon per connected class region of `class_tif` to `out_gpkg`; return the count.

    `min_area_m2`: regions smaller than this are merged into their largest neighbour
    (GDAL sieve, 4-connected); ones with no valid neighbour (surrounded by nodata) are
    dropped. `simplify_tolerance` is in CRS units (topology-preserving, per feature).
    `skip_classes` take part in the sieve but get no polygons (a change map's "no change").
    `area_m2` is the area of the region's pixels (before simplification): planar for
    projected CRSs, exact ellipsoidal cell areas for geographic ones.
    The file appears only when complete; on error or cancel nothing is left behind and an
    earlier `out_gpkg` stays as it was. Missing or unreadable input raises `InputError`.
    """
    progress = progress or silent()
    class_tif, out_gpkg = Path(class_tif), Path(out_gpkg)
    check_block_size(block_size)
    out_gpkg.parent.mkdir(parents=True, exist_ok=True)
    remove_gpkg(out_gpkg, keep_main=True)  # stale -wal/-shm would corrupt the new file
    with atomic_path(out_gpkg, suffix=".gpkg", exists=False) as tmp:
        with open_classes(class_tif) as src:
            writer, min_px = polygon_writer(src, tmp, classes, min_area_m2, simplify_tolerance)
            polygonize_rows(src, (0, src.height), block_size, nodata=nodata, min_px=min_px,
                            writer=writer, progress=progress, skip=skip_classes)
        count = writer.close()
        progress(1.0, "vectorizing")
    return count


def check_block_size(block_size: int) -> None:
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")


def polygon_writer(src: rasterio.DatasetReader, path: Path, classes: list[ClassInfo],
                   min_area_m2: float, simplify_tolerance: float) -> tuple[PolygonWriter, int]:
    """The writer of `src`'s polygons (its CRS, areas, class names) and the sieve in pixels."""
    areas = PixelAreas(src.crs, src.transform)
    names = {c.id: c.name for c in classes}
    writer = PolygonWriter(path, src.crs, src.transform, areas, names, simplify_tolerance)
    return writer, _min_pixels(min_area_m2, areas, src.width, src.height)


def open_classes(path: Path) -> rasterio.DatasetReader:
    if not path.exists():
        raise InputError(path, "class raster does not exist")
    try:
        src = rasterio.open(path)
    except rasterio.RasterioIOError as exc:
        raise InputError(path, f"cannot read the class raster ({exc})") from exc
    if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
        src.close()
        raise InputError(path, f"class raster must hold integer class ids, not {src.dtypes[0]}")
    return src


def polygonize_rows(
    src: rasterio.DatasetReader,
    rows: tuple[int, int],
    block: int,
    *,
    nodata: int,
    min_px: int,
    writer: PolygonWriter,
    progress: Progress,
    skip: frozenset[int] = frozenset(),
) -> dict[int, Regions]:
    """Polygonize the block rows in `rows` [top, bottom) one by one, writing every region as
    soon as it is complete; return, per class, the regions left touching the rows' edges.

    Pieces touching no seam are written at once. Seam pieces are merged with the regions
    still open from the row above; a merged region that does not reach the next row's seam
    can grow no further and is written, so only regions crossing the current seam are held.
    For the whole raster nothing is returned. For a band of it (`top` a multiple of `block`),
    its top and bottom edges are seams whose other side another band sees: the regions
    touching them are returned, for `vectorize_bands.merge_bands` to join across them.
    """
    top, bottom = rows
    width = src.width
    margin = min(max(min_px, MIN_SIEVE_MARGIN), MAX_SIEVE_MARGIN) if min_px > 1 else 0
    open_regions: dict[int, Regions] = {}
    held: dict[int, list[Regions]] = {}  # complete within the band, but touching its top
    n_blocks = math.ceil((bottom - top) / block) * math.ceil(width / block)
    done = 0
    for row0 in range(top, bottom, block):
        row1 = min(row0 + block, bottom)
        pending: dict[int, list[Regions]] = {c: [r] for c, r in open_regions.items()}
        for col0 in range(0, width, block):
            progress(done / n_blocks, "vectorizing")
            done += 1
            win = Window(col0, row0, min(col0 + block, width) - col0, row1 - row0)
            data = _read_block(src, win, margin, nodata, min_px)
            _add_block(data, win, (width, src.height), nodata, skip, writer, min_px, pending)
            del data  # the next block reads its own
        open_regions = close_regions(pending, row1, src.height, writer, min_px,
                                     top=top, held=held)
    for cls, regions in open_regions.items():
        held.setdefault(cls, []).append(regions)
    return {cls: Regions.concat(parts) for cls, parts in held.items()}


def _add_block(data: np.ndarray, win: Window, size: tuple[int, int], nodata: int,
               skip: frozenset[int], writer: PolygonWriter, min_px: int,
               pending: dict[int, list[Regions]]) -> None:
    """A block's polygons: those touching an interior seam into `pending`, the rest written."""
    col0, row0 = int(win.col_off), int(win.row_off)
    col1, row1 = col0 + int(win.width), row0 + int(win.height)
    width, height = size
    for geoms, values in _shapes(data, nodata, Affine.translation(col0, row0), skip):
        minx, miny, maxx, maxy = shapely.bounds(geoms).T
        on_seam = (
            ((minx == col0) & (col0 > 0))
            | ((maxx == col1) & (col1 < width))
            | ((miny == row0) & (row0 > 0))
            | ((maxy == row1) & (row1 < height))
        )
        for cls in np.unique(values).tolist():
            sel = values == cls
            pending.setdefault(cls, []).append(Regions.split(geoms[sel & on_seam]))
            writer.add(keep_large(geoms[sel & ~on_seam], min_px), cls)


def close_regions(pending: dict[int, list[Regions]], row1: int, height: int,
                  writer: PolygonWriter, min_px: int, *, top: int = 0,
                  held: dict[int, list[Regions]] | None = None) -> dict[int, Regions]:
    """Merge each class's pieces at the seam `row1`; return the regions reaching past it.

    The others are complete and written, except those touching a band's top edge `top`
    (when > 0), which go to `held`: the band above may still join them.
    """
    open_regions: dict[int, Regions] = {}
    for cls in sorted(pending):
        regions = merge_pieces(Regions.concat(pending.pop(cls)))
        _, miny, _, maxy = shapely.bounds(regions.shells).reshape(-1, 4).T
        reaches_next = (maxy == row1) & (row1 < height)
        if reaches_next.any():
            open_regions[cls] = regions.take(reaches_next)
        done = ~reaches_next
        if held is not None and top > 0 and (edge := done & (miny == top)).any():
            held.setdefault(cls, []).append(regions.take(edge))
            done &= ~edge
        complete = regions.take(done)
        del regions  # its holes now live in `complete` only
        writer.add_regions(complete, cls, min_px)
        del complete
    return open_regions


def _read_block(
    src: rasterio.DatasetReader, win: Window, margin: int, nodata: int, min_px: int
) -> np.ndarray:
    """Read a block; sieve it with a margin around it so seams see whole small regions."""
    c0 = max(int(win.col_off) - margin, 0)
    r0 = max(int(win.row_off) - margin, 0)
    c1 = min(int(win.col_off + win.width) + margin, src.width)
    r1 = min(int(win.row_off + win.height) + margin, src.height)
    data = src.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
    if data.dtype not in (np.uint8, np.uint16, np.int16, np.int32):
        data = data.astype(np.int32)
    if min_px > 1:
        # nodata is masked: it neither absorbs regions nor gets filled in
        data = rasterio.features.sieve(data, size=min_px, mask=data != nodata, connectivity=4)
    top, left = int(win.row_off) - r0, int(win.col_off) - c0
    return data[top : top + int(win.height), left : left + int(win.width)]


def _shapes(
    data: np.ndarray, nodata: int, transform: Affine, skip: frozenset[int] = frozenset()
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Polygons of a block in pixel coordinates, in chunks so Python memory stays bounded."""
    valid = data != nodata
    if skip:
        valid &= ~np.isin(data, list(skip))
    if not valid.any():
        return
    it = rasterio.features.shapes(data, mask=valid, connectivity=4, transform=transform)
    while chunk := list(itertools.islice(it, _CHUNK)):
        yield _polygons([g["coordinates"] for g, _ in chunk]), np.array(
            [v for _, v in chunk], dtype=np.int64
        )


def _polygons(rings_per_polygon: list[list[list[tuple[float, float]]]]) -> np.ndarray:
    """GeoJSON polygon coordinates -> shapely polygons in one vectorized call (vs shape())."""
    flat: list[tuple[float, float]] = []
    ring_len: list[int] = []
    poly_len: list[int] = []
    for rings in rings_per_polygon:
        poly_len.append(len(rings))
        for ring in rings:
            ring_len.append(len(ring))
            flat.extend(ring)
    offsets = (np.r_[0, np.cumsum(ring_len)], np.r_[0, np.cumsum(poly_len)])
    coords = np.array(flat, dtype=np.float64).reshape(-1, 2)
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, offsets)


def _min_pixels(min_area_m2: float, areas: PixelAreas, width: int, height: int) -> int:
    """The sieve size in pixels: pixel area taken at the raster's centre (same for all blocks)."""
    if min_area_m2 <= 0:
        return 0
    c, r = width // 2, height // 2
    pixel_m2 = float(areas(np.array([shapely.box(c, r, c + 1, r + 1)]))[0])
    if pixel_m2 <= 0:
        return 0
    return max(math.ceil(min_area_m2 / pixel_m2 - 1e-9), 0)
