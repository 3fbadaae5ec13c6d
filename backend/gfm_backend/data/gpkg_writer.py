"""The polygons layer of a classify result: features buffered and appended to a GeoPackage
in batches (layer `polygons`: class_id, class_name, area_m2), in the raster's CRS."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyogrio.raw
import rasterio
import shapely
from affine import Affine

from .areas import PixelAreas
from .pixel_geometry import polygon_wkb, ring_chunks, to_crs
from .regions import Holes, Regions, hole_polygons, keep_large

LAYER = "polygons"


FIELDS = ["class_id", "class_name", "area_m2"]


# GeoPackage 1.3: QGIS 3.22's GDAL (3.4-3.6) warns about the newer 1.4 our GDAL writes
GPKG_OPTIONS = {"VERSION": "1.3"}


_FLUSH_FEATURES = 50_000  # features buffered before an append to the GeoPackage


_FLUSH_BYTES = 64 * 2**20


# A merged region whose holes have this many vertices is written ring by ring (see
# PolygonWriter.add_regions); below it, building the whole polygon in GEOS is cheap.
LARGE_REGION_VERTICES = 1_000_000


class PolygonWriter:
    """Buffers features and appends them to the GeoPackage in batches."""

    def __init__(
        self,
        path: Path,
        crs: rasterio.crs.CRS | None,
        transform: Affine,
        areas: PixelAreas,
        names: dict[int, str],
        simplify_tolerance: float,
    ) -> None:
        self.path = path
        self.crs = crs_string(crs)
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

    def add_regions(self, regions: Regions, cls: int, min_px: int) -> None:
        """Regions merged across seams; a region with millions of hole vertices is written
        ring by ring, so its pixel-space polygon is never built whole."""
        large = np.array([len(h.coords) >= LARGE_REGION_VERTICES for h in regions.holes], bool)
        if self.tolerance > 0:  # topology-preserving simplification needs the whole polygon
            large[:] = False
        self.add(keep_large(regions.take(~large).assemble(), min_px), cls)
        for i in np.flatnonzero(large):
            self._add_large(regions.shells[i], regions.holes[i], cls, min_px)

    def _add_large(self, shell: shapely.Polygon, holes: Holes, cls: int, min_px: int) -> None:
        chunks = ring_chunks(holes.lengths)
        pixels = float(shapely.area(shell))
        area = float(self.areas(np.array([shell]))[0])
        for chunk in chunks:
            chunk_holes = hole_polygons(holes, chunk)
            pixels -= float(shapely.area(chunk_holes).sum())
            area -= float(self.areas(chunk_holes).sum())
        if min_px > 1 and pixels < min_px:
            return
        wkb = polygon_wkb(shell, holes, chunks, self.transform)
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
        geoms = to_crs(pix, self.transform)
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


def append_layer(src: Path, dst: Path, batch: int = _FLUSH_FEATURES) -> int:
    """Append the polygons of `src` to those of `dst` (both ours); return how many.

    Read a batch at a time by fid range (an index seek, so each batch costs its own size),
    so memory follows the batch, not the file.
    """
    last, count = 0, 0
    while True:
        meta, fids, wkb, fields = pyogrio.raw.read(
            src, layer=LAYER, columns=FIELDS, where=f"fid > {last}", max_features=batch,
            return_fids=True, encoding="UTF-8")
        if len(fids) == 0:
            return count
        pyogrio.raw.write(
            dst, geometry=wkb, field_data=list(fields), fields=FIELDS, layer=LAYER,
            driver="GPKG", geometry_type="Polygon", crs=meta["crs"], encoding="UTF-8",
            promote_to_multi=False, append=True,
        )
        last, count = int(fids.max()), count + len(fids)


def crs_string(crs: rasterio.crs.CRS | None) -> str | None:
    """EPSG code when the CRS is exactly one (QGIS then names it), else full WKT."""
    if crs is None:
        return None
    epsg = crs.to_epsg(confidence_threshold=100)
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def remove_gpkg(path: Path, keep_main: bool = False) -> None:
    """Remove a GeoPackage's SQLite side files (and the file itself unless `keep_main`)."""
    suffixes = ("-wal", "-shm", "-journal") if keep_main else ("", "-wal", "-shm", "-journal")
    for suffix in suffixes:
        try:
            os.remove(f"{path}{suffix}")
        except FileNotFoundError:
            pass
