"""A raster's mean under each polygon of a GeoPackage layer, added as a field.

Each polygon reads only the raster window under its bounding box, so memory follows the
largest polygon, not the raster. The layer is rewritten under a temporary name and
renamed over the old one (it is the job's own output, staged).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio.raw
import rasterio
import shapely
from rasterio.features import geometry_mask
from rasterio.windows import Window, from_bounds

from ..atomic import atomic_path
from .gpkg_writer import GPKG_OPTIONS
from .raster import whole_pixels


def _mean_under(ds: rasterio.DatasetReader, geom: shapely.Geometry) -> float:
    win = whole_pixels(from_bounds(*geom.bounds, transform=ds.transform))
    win = win.intersection(Window(0, 0, ds.width, ds.height))
    values = ds.read(1, window=win, masked=True)
    inside = ~geometry_mask([geom], out_shape=values.shape,
                            transform=rasterio.windows.transform(win, ds.transform))
    picked = values[inside & ~np.ma.getmaskarray(values)]
    return float(picked.mean()) if picked.size else float("nan")


def add_mean_field(gpkg: Path, raster: Path, field: str, layer: str = "polygons") -> int:
    """Add `field` = the mean of `raster` (band 1, valid pixels) under each polygon."""
    meta, _, wkb, data = pyogrio.raw.read(str(gpkg), layer=layer)
    geoms = shapely.from_wkb(wkb)
    with rasterio.open(raster) as ds:
        means = np.array([_mean_under(ds, g) for g in geoms], dtype=np.float64)
    with atomic_path(Path(gpkg), suffix=".gpkg", exists=False) as tmp:
        pyogrio.raw.write(
            str(tmp), geometry=wkb, field_data=[*data, means], fields=[*meta["fields"], field],
            layer=layer, driver="GPKG", geometry_type=meta["geometry_type"], crs=meta["crs"],
            encoding="UTF-8", promote_to_multi=False, dataset_options=GPKG_OPTIONS)
    return len(geoms)
