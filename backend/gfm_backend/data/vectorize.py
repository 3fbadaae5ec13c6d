"""Class raster -> polygons.gpkg, block by block, so memory follows the block size, not the raster.

Each block is polygonized with `rasterio.features.shapes` (4-connectivity: pixels that
share only a corner are separate regions, matching GDAL's and rasterio's default). All
geometry work happens in pixel coordinates, where every vertex is an exact integer, so
pieces of one region cut by block seams union exactly; they are mapped to the raster's
CRS only when written. Polygons that touch an interior seam are grouped by shared edges
and unioned, so a region crossing blocks is ONE feature; block row by block row, so a
region is written as soon as no later block can touch it.
Every feature is one connected region, so the layer type is Polygon (never Multi).

Memory: one block's polygons, the regions crossing the current seam, and the largest
region once more while it is written. Holes never cross a seam, so merging unions outer
rings only and keeps holes packed (int32 vertices); a region with millions of hole
vertices is encoded ring by ring, never built whole in GEOS.
"""

from __future__ import annotations

import itertools
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyogrio.raw
import rasterio
import rasterio.features
import shapely
from affine import Affine
from pyproj import CRS as ProjCRS
from rasterio.windows import Window

from ..atomic import atomic_path
from ..errors import InputError
from ..package import ClassInfo
from ..progress import Progress, silent

LAYER = "polygons"
FIELDS = ["class_id", "class_name", "area_m2"]
# The sieve sees this many pixels around each block. A region under N pixels lies within
# N pixels of the block, so it is found exactly; the extra context makes "merge into the
# largest neighbour" see neighbours nearly whole, so blocks decide like a whole-raster
# sieve (checked: identical results in tests). Capped to bound memory.
MIN_SIEVE_MARGIN = 128
MAX_SIEVE_MARGIN = 512
# GeoPackage 1.3: QGIS 3.22's GDAL (3.4-3.6) warns about the newer 1.4 our GDAL writes
GPKG_OPTIONS = {"VERSION": "1.3"}
_CHUNK = 20_000  # shapes converted to shapely at a time
_FLUSH_FEATURES = 50_000  # features buffered before an append to the GeoPackage
_FLUSH_BYTES = 64 * 2**20
# A merged region whose holes have this many vertices is written ring by ring (see
# _Writer.add_regions); below it, building the whole polygon in GEOS is cheap.
LARGE_REGION_VERTICES = 1_000_000
RING_CHUNK_VERTICES = 1 << 20  # holes converted and encoded at a time
_RingChunk = tuple[int, int, int, int]  # first ring, end ring, first vertex, end vertex


def vectorize_classes(
    class_tif: Path,
    out_gpkg: Path,
    classes: list[ClassInfo],
    *,
    min_area_m2: float = 0.0,
    simplify_tolerance: float = 0.0,
    nodata: int = 255,
    block_size: int = 2048,
    progress: Progress | None = None,
) -> int:
    """Write one polygon per connected class region of `class_tif` to `out_gpkg`; return the count.

    `min_area_m2`: regions smaller than this are merged into their largest neighbour
    (GDAL sieve, 4-connected); ones with no valid neighbour (surrounded by nodata) are
    dropped. `simplify_tolerance` is in CRS units (topology-preserving, per feature).
    `area_m2` is the area of the region's pixels (before simplification): planar for
    projected CRSs, exact ellipsoidal cell areas for geographic ones.
    The file appears only when complete; on error or cancel nothing is left behind and an
    earlier `out_gpkg` stays as it was. Missing or unreadable input raises `InputError`.
    """
    progress = progress or silent()
    class_tif, out_gpkg = Path(class_tif), Path(out_gpkg)
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    names = {c.id: c.name for c in classes}
    out_gpkg.parent.mkdir(parents=True, exist_ok=True)
    _remove_gpkg(out_gpkg, keep_main=True)  # stale -wal/-shm would corrupt the new file
    with atomic_path(out_gpkg, suffix=".gpkg", exists=False) as tmp:
        with _open_classes(class_tif) as src:
            areas = _AreaModel(src.crs, src.transform)
            writer = _Writer(tmp, src.crs, src.transform, areas, names, simplify_tolerance)
            min_px = _min_pixels(min_area_m2, areas, src.width, src.height)
            _polygonize_blocks(src, nodata, block_size, min_px, writer, progress)
        count = writer.close()
        progress(1.0, "vectorizing")
    return count


def _open_classes(path: Path) -> rasterio.DatasetReader:
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


def _polygonize_blocks(
    src: rasterio.DatasetReader,
    nodata: int,
    block: int,
    min_px: int,
    writer: _Writer,
    progress: Progress,
) -> None:
    """Polygonize block row by block row, writing every region as soon as it is complete.

    Pieces touching no seam are written at once. Seam pieces are merged with the regions
    still open from the row above; a merged region that does not reach the next row's seam
    can grow no further and is written, so only regions crossing the current seam are held.
    """
    width, height = src.width, src.height
    margin = min(max(min_px, MIN_SIEVE_MARGIN), MAX_SIEVE_MARGIN) if min_px > 1 else 0
    open_regions: dict[int, _Regions] = {}
    n_blocks = math.ceil(height / block) * math.ceil(width / block)
    done = 0
    for row0 in range(0, height, block):
        row1 = min(row0 + block, height)
        pending: dict[int, list[_Regions]] = {c: [r] for c, r in open_regions.items()}
        open_regions = {}
        for col0 in range(0, width, block):
            progress(done / n_blocks, "vectorizing")
            done += 1
            col1 = min(col0 + block, width)
            win = Window(col0, row0, col1 - col0, row1 - row0)
            data = _read_block(src, win, margin, nodata, min_px)
            for geoms, values in _shapes(data, nodata, Affine.translation(col0, row0)):
                minx, miny, maxx, maxy = shapely.bounds(geoms).T
                on_seam = (
                    ((minx == col0) & (col0 > 0))
                    | ((maxx == col1) & (col1 < width))
                    | ((miny == row0) & (row0 > 0))
                    | ((maxy == row1) & (row1 < height))
                )
                for cls in np.unique(values).tolist():
                    sel = values == cls
                    pending.setdefault(cls, []).append(_Regions.split(geoms[sel & on_seam]))
                    writer.add(_keep_large(geoms[sel & ~on_seam], min_px), cls)
            del data  # the next block reads its own
        for cls in sorted(pending):
            regions = _merge_pieces(_Regions.concat(pending.pop(cls)))
            reaches_next = (shapely.bounds(regions.shells)[:, 3] == row1) & (row1 < height)
            if reaches_next.any():
                open_regions[cls] = regions.take(reaches_next)
            complete = regions.take(~reaches_next)
            del regions  # its holes now live in `complete` only
            writer.add_regions(complete, cls, min_px)
            del complete


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
    data: np.ndarray, nodata: int, transform: Affine
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Polygons of a block in pixel coordinates, in chunks so Python memory stays bounded."""
    valid = data != nodata
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


class _Holes:
    """Interior rings in pixel coordinates, packed: int32 vertices and ring lengths.

    Pixel vertices are exact integers, so 8 bytes per vertex hold them exactly, where a
    GEOS ring costs 16 bytes per vertex plus an object per ring.
    """

    __slots__ = ("coords", "lengths")

    def __init__(self, coords: np.ndarray, lengths: np.ndarray) -> None:
        self.coords = coords
        self.lengths = lengths

    @classmethod
    def concat(cls, parts: list[_Holes]) -> _Holes:
        parts = [h for h in parts if len(h.lengths)]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return NO_HOLES
        return cls(np.concatenate([h.coords for h in parts]),
                   np.concatenate([h.lengths for h in parts]))


NO_HOLES = _Holes(np.zeros((0, 2), np.int32), np.zeros(0, np.int64))


class _Regions:
    """Polygons of one class held as outer rings and, apart, each one's holes.

    A piece's holes lie strictly inside its own block (a hole touching the block's edge
    would not be enclosed), so no seam crosses them: merging needs only the outer rings,
    and the holes join the region unchanged when it is written. On a noisy map one region
    can hold millions of hole vertices, and a GEOS overlay costs several hundred bytes per
    vertex: unioning whole pieces took 7 GB where the region itself is under 200 MB.
    """

    def __init__(self, shells: np.ndarray, holes: list[_Holes]) -> None:
        self.shells = shells  # polygons without holes
        self.holes = holes  # per polygon, its interior rings

    @classmethod
    def split(cls, polygons: np.ndarray) -> _Regions:
        if len(polygons) == 0:
            return cls(np.empty(0, dtype=object), [])
        n_rings = shapely.get_num_interior_rings(polygons)
        if not n_rings.any():
            return cls(polygons, [NO_HOLES] * len(polygons))
        _, coords, (ring_off, poly_off) = shapely.to_ragged_array(polygons)
        holes = []
        for i, n in enumerate(n_rings.tolist()):
            if n == 0:
                holes.append(NO_HOLES)
                continue
            rings = ring_off[poly_off[i] : poly_off[i + 1] + 1]
            holes.append(_Holes(coords[rings[1] : rings[-1]].astype(np.int32), np.diff(rings[1:])))
        del coords
        return cls(shapely.polygons(shapely.get_exterior_ring(polygons)), holes)

    @classmethod
    def concat(cls, parts: list[_Regions]) -> _Regions:
        shells = np.concatenate([p.shells for p in parts])
        return cls(shells, [h for p in parts for h in p.holes])

    def take(self, mask: np.ndarray) -> _Regions:
        return _Regions(self.shells[mask], [h for h, m in zip(self.holes, mask, strict=True) if m])

    def assemble(self) -> np.ndarray:
        """The polygons with their holes, as GEOS geometries."""
        out = np.array(self.shells, dtype=object)
        for i, holes in enumerate(self.holes):
            if len(holes.lengths):
                out[i] = _with_holes(out[i], holes)
        return out


def _with_holes(shell: shapely.Polygon, holes: _Holes) -> shapely.Polygon:
    outer = shapely.get_coordinates(shell)
    coords = np.concatenate([outer, holes.coords])
    ring_off = np.r_[0, len(outer), len(outer) + np.cumsum(holes.lengths)]
    return shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, coords, (ring_off, [0, len(ring_off) - 1])
    )[0]


def _hole_polygons(holes: _Holes, chunk: _RingChunk) -> np.ndarray:
    """One chunk of holes as polygons of their own (pixel coordinates)."""
    first, last, v0, v1 = chunk
    ring_off = np.r_[0, np.cumsum(holes.lengths[first:last])]
    return shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, holes.coords[v0:v1].astype(np.float64),
        (ring_off, np.arange(last - first + 1)),
    )


def _merge_pieces(pieces: _Regions) -> _Regions:
    """Union pieces that share an edge (not just a corner: 4-connectivity) into regions."""
    shells = pieces.shells
    if len(shells) < 2:
        return pieces
    left, right = shapely.STRtree(shells).query(shells, predicate="touches")
    keep = left < right
    left, right = left[keep], right[keep]
    edge = shapely.relate_pattern(shells[left], shells[right], "F***1****")
    labels = _components(len(shells), left[edge], right[edge])
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    out_shells: list[shapely.Polygon] = []
    out_holes: list[_Holes] = []
    for group in np.split(order, bounds):
        if len(group) == 1:
            out_shells.append(shells[group[0]])
            out_holes.append(pieces.holes[group[0]])
            continue
        # tolerance 0 drops the collinear vertices the seams leave on merged edges
        merged = _Regions.split(shapely.get_parts(
            shapely.simplify(shapely.union_all(shells[group]), 0, preserve_topology=True)
        ))
        if len(merged.shells) == 1:
            home = np.zeros(len(group), dtype=np.int64)
        else:  # not expected for edge-connected pieces; place holes by their piece's shell
            points = shapely.point_on_surface(shells[group])
            home = np.array([int(np.flatnonzero(shapely.contains(merged.shells, pt))[0])
                             for pt in points])
        for i, shell in enumerate(merged.shells):
            out_shells.append(shell)
            own = [pieces.holes[g] for g, h in zip(group, home, strict=True) if h == i]
            out_holes.append(_Holes.concat([merged.holes[i], *own]))
    return _Regions(np.array(out_shells, dtype=object), out_holes)


def _components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected-component labels of an undirected graph (min-label propagation)."""
    labels = np.arange(n)
    while True:
        low = np.minimum(labels[left], labels[right])
        new = labels.copy()
        np.minimum.at(new, left, low)
        np.minimum.at(new, right, low)
        new = new[new]  # pointer jumping: converges in a few rounds
        if np.array_equal(new, labels):
            return labels
        labels = new


def _keep_large(geoms: np.ndarray, min_px: int) -> np.ndarray:
    """Drop regions under the sieve size that the sieve could not merge (nodata all round)."""
    if min_px <= 1 or len(geoms) == 0:
        return geoms
    return geoms[shapely.area(geoms) >= min_px]


def _min_pixels(min_area_m2: float, areas: _AreaModel, width: int, height: int) -> int:
    """The sieve size in pixels: pixel area taken at the raster's centre (same for all blocks)."""
    if min_area_m2 <= 0:
        return 0
    c, r = width // 2, height // 2
    pixel_m2 = float(areas(np.array([shapely.box(c, r, c + 1, r + 1)]))[0])
    if pixel_m2 <= 0:
        return 0
    return max(math.ceil(min_area_m2 / pixel_m2 - 1e-9), 0)


class _AreaModel:
    """Area in m2 of pixel-space polygons: exact for pixel-aligned shapes in any CRS.

    Projected (or no CRS, units taken as metres): pixel area x |det(transform)| x unit^2.
    Geographic, north-up: Green's theorem with the ellipsoid's area between parallels,
    so each pixel counts as its true cell area (geodesic edges would bow off parallels).
    Geographic, rotated: pyproj.Geod on the polygon in the CRS.
    """

    def __init__(self, crs: rasterio.crs.CRS | None, transform: Affine) -> None:
        self.transform = transform
        self.det = abs(transform.a * transform.e - transform.b * transform.d)
        self.factor = 1.0
        self.geod = None
        self.angle = 0.0
        if crs is None:
            return
        pcrs = ProjCRS.from_wkt(crs.to_wkt())
        unit = pcrs.axis_info[0].unit_conversion_factor if pcrs.axis_info else 1.0
        if pcrs.is_geographic:
            self.geod = pcrs.get_geod()
            self.angle = unit  # radians per CRS angular unit
        else:
            self.factor = unit

    def __call__(self, pix: np.ndarray) -> np.ndarray:
        if len(pix) == 0:
            return np.zeros(0)
        if self.geod is None:
            return shapely.area(pix) * self.det * self.factor**2
        t = self.transform
        if t.b == 0 and t.d == 0:
            return self._cells(pix)
        geoms = _to_crs(pix, t)
        return np.array([abs(self.geod.geometry_area_perimeter(g)[0]) for g in geoms])

    def _q(self, rows: np.ndarray) -> np.ndarray:
        """Snyder's authalic q(latitude): area from the equator per radian is a^2 q / 2."""
        lat = np.clip((self.transform.f + self.transform.e * rows) * self.angle, -np.pi / 2,
                      np.pi / 2)
        s = np.sin(lat)
        assert self.geod is not None  # only geographic rasters reach here
        es = self.geod.es
        if es == 0:
            return 2 * s
        e = math.sqrt(es)
        return (1 - es) * (s / (1 - es * s * s) - np.log((1 - e * s) / (1 + e * s)) / (2 * e))

    def _cells(self, pix: np.ndarray) -> np.ndarray:
        rings, owner = shapely.get_rings(pix, return_index=True)
        exterior = np.r_[True, owner[1:] != owner[:-1]]
        xy, ring = shapely.get_coordinates(rings, return_index=True)
        w = self._q(xy[:, 1])
        start = np.r_[True, ring[1:] != ring[:-1]]
        # any constant per ring cancels (sum of dx is 0); the ring's own start keeps precision
        w -= w[np.maximum.accumulate(np.where(start, np.arange(len(w)), 0))]
        same = ~start[1:]
        edge = -(xy[1:, 0] - xy[:-1, 0]) * 0.5 * (w[1:] + w[:-1])
        ring_sum = np.bincount(ring[:-1][same], weights=edge[same], minlength=len(rings))
        assert self.geod is not None
        scale = abs(self.transform.a) * self.angle * self.geod.a**2 / 2
        ring_area = np.abs(ring_sum) * scale
        return np.bincount(owner, weights=np.where(exterior, ring_area, -ring_area),
                           minlength=len(pix))


def _to_crs(pix: np.ndarray, t: Affine) -> np.ndarray:
    """Pixel (col, row) coordinates -> CRS coordinates; one formula, so shared vertices match."""
    return shapely.transform(pix, lambda xy: _transform_in_place(xy, t))


def _transform_in_place(xy: np.ndarray, t: Affine) -> np.ndarray:
    """t * (col, row), computed as t.a * x + t.b * y + t.c, in place: no copy of the vertices."""
    x = xy[:, 0].copy() if t.d else None
    xy[:, 0] *= t.a
    if t.b:
        xy[:, 0] += t.b * xy[:, 1]
    xy[:, 0] += t.c
    xy[:, 1] *= t.e
    if x is not None:
        xy[:, 1] += t.d * x
    xy[:, 1] += t.f
    return xy


class _Writer:
    """Buffers features and appends them to the GeoPackage in batches."""

    def __init__(
        self,
        path: Path,
        crs: rasterio.crs.CRS | None,
        transform: Affine,
        areas: _AreaModel,
        names: dict[int, str],
        simplify_tolerance: float,
    ) -> None:
        self.path = path
        self.crs = _crs_string(crs)
        self.transform = transform
        self.names = names
        self.tolerance = simplify_tolerance
        self.areas = areas
        self.count = 0
        self.created = False
        self._buf: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._buf_n = 0
        self._buf_bytes = 0

    def add(self, pix: np.ndarray, cls: int) -> None:
        if len(pix) == 0:
            return
        area = self.areas(pix)
        self._buffer(shapely.to_wkb(self._in_crs(pix)), cls, area)  # the CRS copy is freed

    def add_regions(self, regions: _Regions, cls: int, min_px: int) -> None:
        """Regions merged across seams; a region with millions of hole vertices is written
        ring by ring, so its pixel-space polygon is never built whole."""
        large = np.array([len(h.coords) >= LARGE_REGION_VERTICES for h in regions.holes], bool)
        if self.tolerance > 0:  # topology-preserving simplification needs the whole polygon
            large[:] = False
        self.add(_keep_large(regions.take(~large).assemble(), min_px), cls)
        for i in np.flatnonzero(large):
            self._add_large(regions.shells[i], regions.holes[i], cls, min_px)

    def _add_large(self, shell: shapely.Polygon, holes: _Holes, cls: int, min_px: int) -> None:
        chunks = _ring_chunks(holes.lengths)
        pixels = float(shapely.area(shell))
        area = float(self.areas(np.array([shell]))[0])
        for chunk in chunks:
            hole_polygons = _hole_polygons(holes, chunk)
            pixels -= float(shapely.area(hole_polygons).sum())
            area -= float(self.areas(hole_polygons).sum())
        if min_px > 1 and pixels < min_px:
            return
        wkb = _polygon_wkb(shell, holes, chunks, self.transform)
        self._buffer(np.array([wkb], dtype=object), cls, np.array([area]))

    def _buffer(self, wkb: np.ndarray, cls: int, area: np.ndarray) -> None:
        """A full buffer is written first, when the caller has let go of the geometries
        behind it (one region can be hundreds of MB), so they never coexist with OGR's copy."""
        if self._buf_n >= _FLUSH_FEATURES or self._buf_bytes >= _FLUSH_BYTES:
            self.flush()
        self._buf.append((wkb, np.full(len(wkb), cls, dtype=np.int32), area))
        self._buf_n += len(wkb)
        self._buf_bytes += sum(len(b) for b in wkb)

    def _in_crs(self, pix: np.ndarray) -> np.ndarray:
        geoms = _to_crs(pix, self.transform)
        if self.tolerance > 0:
            geoms = shapely.simplify(geoms, self.tolerance, preserve_topology=True)
        return geoms

    def flush(self) -> None:
        if not self._buf and self.created:
            return
        wkb = np.concatenate([b[0] for b in self._buf]) if self._buf else np.array([], object)
        ids = np.concatenate([b[1] for b in self._buf]) if self._buf else np.array([], np.int32)
        area = np.concatenate([b[2] for b in self._buf]) if self._buf else np.array([], float)
        names = np.array([self.names.get(int(i), f"class {i}") for i in ids], dtype=object)
        pyogrio.raw.write(
            self.path, geometry=wkb, field_data=[ids, names, area.astype(np.float64)],
            fields=FIELDS, layer=LAYER, driver="GPKG", geometry_type="Polygon",
            crs=self.crs, encoding="UTF-8", promote_to_multi=False, append=self.created,
            dataset_options=None if self.created else GPKG_OPTIONS,
        )
        self.created = True
        self.count += len(wkb)
        self._buf, self._buf_n, self._buf_bytes = [], 0, 0

    def close(self) -> int:
        self.flush()
        return self.count


def _ring_chunks(lengths: np.ndarray) -> list[_RingChunk]:
    """Split rings into runs of about RING_CHUNK_VERTICES vertices: (first ring, end ring,
    first vertex, end vertex) each."""
    ends = np.r_[0, np.cumsum(lengths)]
    cuts = np.searchsorted(ends[1:], np.arange(RING_CHUNK_VERTICES, int(ends[-1]),
                                               RING_CHUNK_VERTICES))
    bounds = np.unique(np.r_[0, cuts + 1, len(lengths)].clip(0, len(lengths)))
    return [(int(a), int(b), int(ends[a]), int(ends[b]))
            for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def _polygon_wkb(shell: shapely.Polygon, holes: _Holes, chunks: list[_RingChunk],
                 t: Affine) -> bytes:
    """ISO WKB (little-endian, 2D) of shell + holes in CRS coordinates, a chunk of rings at a
    time: byte for byte what shapely.to_wkb gives for the whole polygon."""
    outer = _transform_in_place(shapely.get_coordinates(shell), t).astype("<f8", copy=False)
    parts = [struct.pack("<BII", 1, 3, 1 + len(holes.lengths)),
             struct.pack("<I", len(outer)), outer.tobytes()]
    for first, last, v0, v1 in chunks:
        xy = _transform_in_place(holes.coords[v0:v1].astype("<f8"), t)
        buf = bytearray()
        prev = 0
        for n in holes.lengths[first:last].tolist():
            buf += struct.pack("<I", n)
            buf += xy[prev : prev + n].tobytes()
            prev += n
        parts.append(bytes(buf))
        del buf, xy
    return b"".join(parts)


def _crs_string(crs: rasterio.crs.CRS | None) -> str | None:
    """EPSG code when the CRS is exactly one (QGIS then names it), else full WKT."""
    if crs is None:
        return None
    epsg = crs.to_epsg(confidence_threshold=100)
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _remove_gpkg(path: Path, keep_main: bool = False) -> None:
    """Remove a GeoPackage's SQLite side files (and the file itself unless `keep_main`)."""
    suffixes = ("-wal", "-shm", "-journal") if keep_main else ("", "-wal", "-shm", "-journal")
    for suffix in suffixes:
        try:
            os.remove(f"{path}{suffix}")
        except FileNotFoundError:
            pass
