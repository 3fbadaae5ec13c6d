"""Results as Cloud Optimized GeoTIFFs with overviews: a large class raster then draws
quickly in QGIS at every zoom (and streams over HTTP), with its colour table and nodata."""

from __future__ import annotations

from pathlib import Path

import rasterio
import rasterio.shutil

from ..atomic import atomic_path


def to_cog(path: Path, resampling: str) -> None:
    """Rewrite `path` as a COG in place (atomically). `resampling` for the overviews:
    `mode` for classes (a class never blends into a made-up one), `average` for scores.

    DEFLATE with the TIFF predictor (horizontal differences for integers, the floating
    point one for scores), which every GDAL since 1.x reads: a 2048 px confidence COG
    takes 5.0 MB instead of 8.3 in the same time."""
    with atomic_path(path, suffix=".tif", exists=False) as tmp:
        rasterio.shutil.copy(path, tmp, driver="COG", COMPRESS="DEFLATE", LEVEL=1, PREDICTOR="YES",
                             BLOCKSIZE=256, OVERVIEW_RESAMPLING=resampling.upper(),
                             BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS")
