"""Training polygons drawn by an analyst: read from any OGR format, named classes, reprojected.

Classes are named from the class field's values; labels are reprojected to each
raster's CRS (never assumed to share it), and a label file without a CRS is refused.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio
import shapely
from rasterio.crs import CRS
from rasterio.warp import transform_geom

from ..errors import InputError
from ..files import refuse_special

log = logging.getLogger(__name__)


@dataclass
class LabelSet:
    """Polygons with their class values, in the CRS of the file they came from."""

    path: Path
    field: str
    geoms: np.ndarray  # shapely geometries
    values: list[object]
    crs: CRS


def read_labels(path: Path, class_field: str | None) -> LabelSet:
    """Polygons and their classes; without a class field every polygon is one class,
    named after the layer (footprint files such as building outlines often have no fields)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "label file does not exist")
    refuse_special(path)
    try:
        info = pyogrio.read_info(str(path))
    except Exception as exc:  # pyogrio raises DataSourceError and others
        raise InputError(path, f"not a vector file GDAL can read ({exc})") from exc
    if not info.get("crs"):
        raise InputError(path, "has no coordinate reference system; labels cannot be placed")
    fields = [str(f) for f in info["fields"]]
    if class_field is None:
        _, _, wkb, _ = pyogrio.raw.read(str(path), columns=[])
        layer = str(info.get("layer_name") or path.stem)
        return _collect(path, layer, shapely.from_wkb(wkb), np.array([layer] * len(wkb), object),
                        info)
    if class_field not in fields:
        raise InputError(
            path, f"has no field {class_field!r}; fields are: {', '.join(fields) or '(none)'}"
        )
    _, _, wkb, field_data = pyogrio.raw.read(str(path), columns=[class_field])
    return _collect(path, class_field, shapely.from_wkb(wkb), field_data[0], info)


def _collect(path: Path, class_field: str, geoms: np.ndarray, raw_values: np.ndarray,
             info: dict) -> LabelSet:
    """Keep polygons that have a class value; say how many features were skipped."""
    keep, values = [], []
    for i, (g, v) in enumerate(zip(geoms, raw_values, strict=True)):
        if g is None or shapely.is_empty(g):
            continue
        if shapely.get_type_id(g) not in (3, 6):  # Polygon, MultiPolygon
            continue
        if v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == "":
            continue
        keep.append(i)
        values.append(v.item() if hasattr(v, "item") else v)
    if not keep:
        raise InputError(
            path, f"no polygons with a value in field {class_field!r} (empty or missing class field)"
        )
    skipped = len(geoms) - len(keep)
    if skipped:
        log.warning("%s: %d feature(s) skipped (not polygons or no class value)", path, skipped)
    geoms = shapely.make_valid(geoms[keep])
    return LabelSet(path, class_field, geoms, values, CRS.from_user_input(info["crs"]))


def class_names(values: list[object]) -> list[str]:
    """Distinct class values in a stable order: numeric order for numbers, else alphabetical."""
    distinct = set(values)
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in distinct):
        ordered = sorted(float(v) for v in distinct)  # type: ignore[arg-type]  # numbers only here
        return [str(int(v)) if v.is_integer() else str(v) for v in ordered]
    return sorted(str(v) for v in distinct)


def value_name(v: object) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def reproject_geoms(geoms: np.ndarray, src: CRS, dst: CRS) -> np.ndarray:
    """Reproject shapely geometries with GDAL (the same transformation rasterio uses)."""
    if src == dst:
        return geoms
    mapped = [shapely.geometry.mapping(g) for g in geoms]
    out = transform_geom(src, dst, mapped)
    return np.array([shapely.geometry.shape(g) for g in out], dtype=object)
