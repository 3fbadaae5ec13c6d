"""Polygon areas in square metres, whatever the CRS: planar when projected, geodesic when not."""

from __future__ import annotations

import numpy as np
import shapely
from pyproj import CRS as ProjCRS
from pyproj import Geod
from rasterio.crs import CRS


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
