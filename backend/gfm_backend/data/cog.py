"""Results as Cloud Optimized GeoTIFFs with overviews: a large class raster then draws
quickly in QGIS at every zoom (and streams over HTTP), with its colour table and nodata."""

from __future__ import annotations

from pathlib import Path

import rasterio
import rasterio.shutil

from ..atomic import atomic_path


def to_cog(path: Path, resampling: str) -> None:
    """Rewrite `path` as a COG in place (atomically). `resampling` for the overviews:
    `mode` for classes (a class never blends into a made-up one), `average` for scores."""
    with atomic_path(path, suffix=".tif", exists=False) as tmp:
        rasterio.shutil.copy(path, tmp, driver="COG", COMPRESS="DEFLATE", LEVEL=1,
                             BLOCKSIZE=256, OVERVIEW_RESAMPLING=resampling.upper(),
                             BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS")
