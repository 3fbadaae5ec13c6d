"""Training and validation chips cut where the labels are, with a spatially separate split.

Validation holds out whole groups of polygons (polygons closer than a chip to each other
form one group), so no validation pixel shares a polygon, or a chip's neighbourhood,
with training pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import rasterio
import shapely
from rasterio.features import rasterize
from rasterio.transform import Affine
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from .raster import Normalizer, read_window

IGNORE = 255


@dataclass
class RasterLabels:
    """The polygons that fall on one raster, in its CRS, with class ids and split."""

    geoms: np.ndarray
    class_ids: np.ndarray
    is_val: np.ndarray  # bool per polygon
    group: np.ndarray  # group id per polygon (groups never straddle the split)


@dataclass
class ChipSet:
    images: list[np.ndarray] = field(default_factory=list)  # (bands, T, T) float32 normalised
    labels: list[np.ndarray] = field(default_factory=list)  # (T, T) uint8, 255 = ignore

    def __len__(self) -> int:
        return len(self.images)

    def extend(self, other: ChipSet) -> None:
        self.images.extend(other.images)
        self.labels.extend(other.labels)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.stack(self.images), np.stack(self.labels)


def group_polygons(geoms: np.ndarray, distance: float) -> np.ndarray:
    """Union-find over polygons nearer than `distance`: ids of spatial groups."""
    parent = list(range(len(geoms)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="dwithin", distance=distance)
    for a, b in zip(left.tolist(), right.tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    roots = [find(i) for i in range(len(geoms))]
    _, ids = np.unique(roots, return_inverse=True)
    return ids


def spatial_split(
    class_ids: np.ndarray, groups: np.ndarray, val_fraction: float, seed: int
) -> np.ndarray:
    """Pick whole groups for validation, keeping every class present in training."""
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(class_ids), dtype=bool)
    total = np.bincount(class_ids, minlength=class_ids.max() + 1)
    target = np.floor(total * val_fraction + 0.5).astype(int)
    target[total >= 2] = np.maximum(target[total >= 2], 1)
    in_val = np.zeros_like(total)
    for g in rng.permutation(np.unique(groups)):
        members = groups == g
        counts = np.bincount(class_ids[members], minlength=len(total))
        present = counts > 0
        fits = np.all(in_val[present] + counts[present] <= target[present])
        keeps_train = np.all(total[present] - in_val[present] - counts[present] >= 1)
        if fits and keeps_train:
            is_val[members] = True
            in_val += counts
    return is_val


def _label_chip(
    labels: RasterLabels, use_val: bool, out_shape: tuple[int, int], transform: Affine,
    bounds: shapely.Geometry, background: bool,
) -> np.ndarray:
    """Burn this split's polygons; the other split's polygons become ignore."""
    tree_idx = np.nonzero(shapely.intersects(labels.geoms, bounds))[0]
    fill = 0 if background else IGNORE
    out = np.full(out_shape, fill, dtype=np.uint8)
    mine = [(labels.geoms[i], int(labels.class_ids[i])) for i in tree_idx
            if labels.is_val[i] == use_val]
    other = [(labels.geoms[i], 1) for i in tree_idx if labels.is_val[i] != use_val]
    if mine:
        rasterize(mine, out_shape=out_shape, transform=transform, out=out, dtype=np.uint8)
    if other:
        hide = rasterize(other, out_shape=out_shape, transform=transform, dtype=np.uint8)
        out[hide > 0] = IGNORE
    return out


# read(window, out_size) -> (raw bands, valid mask): one raster, or a change pair's two dates
ChipReader = Callable[[Window, int | None], tuple[np.ndarray, np.ndarray]]


def cut_chip(
    ds: rasterio.DatasetReader, bands: list[int], normalize: Normalizer, labels: RasterLabels,
    window: Window, tile: int, use_val: bool, background: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Image and label arrays for one window of a raster, resampled to the model's tile size."""
    def read(win: Window, out_size: int | None) -> tuple[np.ndarray, np.ndarray]:
        return read_window(ds, bands, win, out_size=out_size)

    return cut_chip_from(read, ds.transform, normalize, labels, window, tile, use_val, background)


def cut_chip_from(
    read: ChipReader, transform: Affine, normalize: Normalizer, labels: RasterLabels,
    window: Window, tile: int, use_val: bool, background: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Image and label arrays for one window of the grid `transform` places, at `tile` px."""
    src = int(window.width)
    raw, valid = read(window, tile if src != tile else None)
    wt = window_transform(window, transform) @ Affine.scale(src / tile)
    x0, y0 = wt @ (0, 0)
    x1, y1 = wt @ (tile, tile)
    bounds = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    label = _label_chip(labels, use_val, (tile, tile), wt, bounds, background)
    if src != tile:
        idx = (np.arange(tile) * src / tile).astype(int)
        valid = valid[np.ix_(idx, idx)]
    label[~valid] = IGNORE
    return normalize(raw), label


def _random_point_in(geom: shapely.Geometry, rng: np.random.Generator) -> tuple[float, float]:
    minx, miny, maxx, maxy = geom.bounds
    for _ in range(50):
        p = shapely.Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
        if geom.contains(p):
            return p.x, p.y
    p = geom.representative_point()
    return p.x, p.y


def train_windows(
    ds: rasterio.DatasetReader, labels: RasterLabels, src_tile: int, count: int,
    rng: np.random.Generator,
) -> list[Window]:
    """Chip windows centred near random points of training polygons, classes balanced."""
    train = np.nonzero(~labels.is_val)[0]
    if len(train) == 0 or count <= 0:
        return []
    classes = np.unique(labels.class_ids[train])
    inv = ~ds.transform
    out = []
    for _ in range(count):
        c = rng.choice(classes)
        members = train[labels.class_ids[train] == c]
        areas = shapely.area(labels.geoms[members])
        i = rng.choice(members, p=areas / areas.sum() if areas.sum() > 0 else None)
        x, y = _random_point_in(labels.geoms[i], rng)
        col, row = inv @ (x, y)
        jitter = rng.uniform(-0.25, 0.25, size=2) * src_tile
        out.append(_centred(col + jitter[0], row + jitter[1], src_tile, ds))
    return out


def val_windows(
    ds: rasterio.DatasetReader, labels: RasterLabels, src_tile: int, limit: int,
    rng: np.random.Generator,
) -> list[Window]:
    """A grid of chips over each validation polygon group (deterministic given the seed)."""
    val = np.nonzero(labels.is_val)[0]
    inv = ~ds.transform
    out: list[Window] = []
    for g in np.unique(labels.group[val]):
        members = val[labels.group[val] == g]
        union = shapely.union_all(labels.geoms[members])
        minx, miny, maxx, maxy = union.bounds
        c0, r0 = inv @ (minx, maxy)
        c1, r1 = inv @ (maxx, miny)
        c0, c1 = sorted((c0, c1))
        r0, r1 = sorted((r0, r1))
        ny = max(1, math.ceil((r1 - r0) / src_tile))
        nx = max(1, math.ceil((c1 - c0) / src_tile))
        for iy in range(ny):
            for ix in range(nx):
                cx = c0 + (ix + 0.5) * (c1 - c0) / nx
                cy = r0 + (iy + 0.5) * (r1 - r0) / ny
                out.append(_centred(cx, cy, src_tile, ds))
    if len(out) > limit:
        keep = rng.choice(len(out), size=limit, replace=False)
        out = [out[i] for i in sorted(keep)]
    return out


def _centred(col: float, row: float, size: int, ds: rasterio.DatasetReader) -> Window:
    """A size x size window centred at (col, row), kept on the raster where it fits."""
    c = int(round(col - size / 2))
    r = int(round(row - size / 2))
    c = min(max(c, 0), max(ds.width - size, 0))
    r = min(max(r, 0), max(ds.height - size, 0))
    return Window(c, r, size, size)
