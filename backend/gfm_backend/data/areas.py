"""Areas in square metres, whatever the CRS: planar when projected, geodesic when not.

`polygon_areas_m2` measures polygons in a CRS (tile grids); `PixelAreas` measures polygons
in pixel coordinates exactly (vectorized class regions), falling back to the former for
rotated geographic rasters.
"""

from __future__ import annotations

import math

import numpy as np
import rasterio
import shapely
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Geod
from rasterio.crs import CRS

from .pixel_geometry import to_crs


def polygon_areas_m2(geoms: np.ndarray, crs: CRS | None) -> np.ndarray:
    """Areas of shapely polygons given in `crs` (planar CRS units assumed metres without CRS)."""
    if len(geoms) == 0:
        return np.zeros(0, dtype=np.float64)
    if crs is None:
        return shapely.area(geoms).astype(np.float64)
    pcrs = ProjCRS.from_wkt(crs.to_wkt())
    if pcrs.is_geographic:
        geod = pcrs.get_geod() or Geod(ellps="WGS84")
        return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in geoms])
    factor = pcrs.axis_info[0].unit_conversion_factor if pcrs.axis_info else 1.0
    return shapely.area(geoms).astype(np.float64) * factor * factor


class PixelAreas:
    """Area in m2 of pixel-space polygons: exact for pixel-aligned shapes in any CRS.

    Projected (or no CRS, units taken as metres): pixel area x |det(transform)| x unit^2.
    Geographic, north-up: Green's theorem with the ellipsoid's area between parallels,
    so each pixel counts as its true cell area (geodesic edges would bow off parallels).
    Geographic, rotated: pyproj.Geod on the polygon in the CRS.
    """

    def __init__(self, crs: rasterio.crs.CRS | None, transform: Affine) -> None:
        self.transform, self.crs = transform, crs
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
        return polygon_areas_m2(to_crs(pix, t), self.crs)

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
