"""The polygon grid of a scene-classification run: one square per tile with its class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio.raw
import shapely
from rasterio.crs import CRS
from rasterio.transform import Affine

from ..atomic import atomic_path
from ..package import ClassInfo
from .areas import polygon_areas_m2
from .gpkg_writer import GPKG_OPTIONS


def write_tile_grid(
    out_gpkg: Path,
    classes: np.ndarray,
    scores: np.ndarray,
    transform: Affine,
    crs: CRS | None,
    class_info: list[ClassInfo],
) -> int:
    """Write tiles with a class (255 = no data, skipped) as polygons; returns the count."""
    rows, cols = np.nonzero(classes != 255)
    names = {c.id: c.name for c in class_info}
    corners = []
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        x0, y0 = transform @ (c, r)
        x1, y1 = transform @ (c + 1, r + 1)
        corners.append(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    geoms = np.array(corners, dtype=object)
    ids = classes[rows, cols].astype(np.int32)
    with atomic_path(out_gpkg, suffix=".gpkg", exists=False) as tmp:
        _write_grid(tmp, geoms, ids, names, scores[rows, cols], crs)
    return len(geoms)


def _write_grid(tmp: Path, geoms: np.ndarray, ids: np.ndarray, names: dict, scores: np.ndarray,
                crs: CRS | None) -> None:
    pyogrio.raw.write(
        str(tmp),
        shapely.to_wkb(geoms) if len(geoms) else np.array([], dtype=object),
        [ids, np.array([names[i] for i in ids.tolist()], dtype=object),
         scores.astype(np.float64), polygon_areas_m2(geoms, crs)],
        ["class_id", "class_name", "score", "area_m2"],
        layer="polygons", driver="GPKG", geometry_type="Polygon",
        crs=crs.to_wkt() if crs else None, dataset_options=GPKG_OPTIONS,
    )
