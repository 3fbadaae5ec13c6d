"""A synthetic aerial scene with known ground truth, for the demo, tests and benchmarks.

Nothing here is real imagery: regions of water, forest, field and built-up land are
drawn from smooth random fields and given textures an RGB sensor would roughly see.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio.raw
import rasterio
import shapely
from rasterio.transform import from_origin

from .gpkg_writer import GPKG_OPTIONS

SCENE_CLASSES = ("water", "forest", "field", "built-up")
SCENE_CRS = "EPSG:32633"
SCENE_ORIGIN = (500_000.0, 5_000_000.0)


@dataclass
class Scene:
    image: np.ndarray  # (3, H, W) uint8
    truth: np.ndarray  # (H, W) uint8 class ids into SCENE_CLASSES
    transform: rasterio.Affine
    crs: str = SCENE_CRS


def _smooth_noise(h: int, w: int, cell: int, rng: np.random.Generator) -> np.ndarray:
    """Value noise: random values on a coarse grid, bilinearly upsampled."""
    gh, gw = h // cell + 2, w // cell + 2
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    ys = np.arange(h, dtype=np.float32) / cell
    xs = np.arange(w, dtype=np.float32) / cell
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def make_scene(size: int = 768, gsd: float = 0.5, seed: int = 7) -> Scene:
    rng = np.random.default_rng(seed)
    h = w = size
    fields = np.stack([_smooth_noise(h, w, 96, rng) + 0.5 * _smooth_noise(h, w, 32, rng)
                       for _ in SCENE_CLASSES])
    truth = fields.argmax(axis=0).astype(np.uint8)
    fine = _smooth_noise(h, w, 3, rng)
    medium = _smooth_noise(h, w, 8, rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((3, h, w), dtype=np.float32)
    base = {
        0: (35, 70, 110), 1: (45, 95, 45), 2: (185, 165, 105), 3: (140, 138, 135),
    }
    for cid, rgb in base.items():
        m = truth == cid
        for band in range(3):
            img[band][m] = rgb[band]
    water, forest, field, built = (truth == i for i in range(4))
    img[:, water] += 6 * medium[water]
    img[:, forest] += 22 * fine[forest] + 10 * medium[forest]
    stripes = 14 * np.sin((xx + 0.6 * yy) / 2.5)
    img[:, field] += stripes[field] + 6 * medium[field]
    roofs = ((xx // 14 + yy // 11) % 3 == 0) & ((xx % 14) > 2) & ((yy % 11) > 2)
    img[0][built & roofs] += 60
    img[1][built & roofs] -= 10
    img[:, built & ~roofs] += 8 * fine[built & ~roofs]
    img += rng.normal(0, 3, img.shape).astype(np.float32)
    image = np.clip(img, 0, 255).astype(np.uint8)
    transform = from_origin(SCENE_ORIGIN[0], SCENE_ORIGIN[1], gsd, gsd)
    return Scene(image, truth, transform)


def write_scene(scene: Scene, path: Path, nodata: int | None = None) -> Path:
    profile = {
        "driver": "GTiff", "dtype": "uint8", "count": 3, "width": scene.image.shape[2],
        "height": scene.image.shape[1], "crs": scene.crs, "transform": scene.transform,
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
        "photometric": "RGB",
    }
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(scene.image)
    return Path(path)


def draw_training_polygons(
    scene: Scene, per_class: int = 4, box_px: int = 40, max_col: int | None = None,
    seed: int = 3,
) -> tuple[list[shapely.Polygon], list[str]]:
    """Squares lying wholly inside one class, as an analyst would sketch examples.

    `max_col` keeps them in the left part of the scene, so the rest is unseen truth.
    """
    rng = np.random.default_rng(seed)
    h, w = scene.truth.shape
    max_col = max_col or w
    geoms: list[Any] = []
    names: list[str] = []
    for cid, name in enumerate(SCENE_CLASSES):
        found = 0
        for _ in range(4000):
            if found == per_class:
                break
            r = int(rng.integers(0, h - box_px))
            c = int(rng.integers(0, max_col - box_px))
            if (scene.truth[r : r + box_px, c : c + box_px] != cid).any():
                continue
            x0, y0 = scene.transform @ (c, r)
            x1, y1 = scene.transform @ (c + box_px, r + box_px)
            box = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            if any(box.intersects(g) for g in geoms):
                continue
            geoms.append(box)
            names.append(name)
            found += 1
    return geoms, names


def write_polygons(path: Path, geoms: list, values: list, crs: str, field: str = "class") -> Path:
    arr = np.array(geoms, dtype=object)
    pyogrio.raw.write(
        str(path), shapely.to_wkb(arr), [np.array(values, dtype=object)], [field],
        layer="labels", driver="GPKG" if str(path).endswith(".gpkg") else None,
        geometry_type="Polygon", crs=crs,
        dataset_options=GPKG_OPTIONS if str(path).endswith(".gpkg") else None,
    )
    return Path(path)
