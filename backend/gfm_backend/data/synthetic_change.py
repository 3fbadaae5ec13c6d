"""A synthetic pair of dates with known changes, for the demo, tests and benchmarks.

Not real imagery: the earlier date is `synthetic.make_scene`; the later one adds new
built-up patches on fields, clears patches of forest to bare soil, and shifts the whole
image's brightness and contrast (another sun, another season), which is not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely

from .synthetic import SCENE_CLASSES, Scene, make_scene, write_scene

# in the order fine-tuning gives class ids (no change, then the names sorted)
CHANGE_CLASSES = ("no change", "cleared", "new building")
CLEARED, BUILDING = 1, 2
FIELD, FOREST = SCENE_CLASSES.index("field"), SCENE_CLASSES.index("forest")
SOIL = (150, 120, 85)


@dataclass
class ChangePair:
    before: Scene
    after: Scene
    truth: np.ndarray  # (H, W) uint8 ids into CHANGE_CLASSES
    patches: list[tuple[int, int, int, int, int]]  # (class id, row, col, height, width)


def _patches(scene: Scene, count: int, size: int, rng: np.random.Generator) -> list[tuple]:
    """Rectangles on fields (they get buildings) or in forest (it is cleared), alternately."""
    h, w = scene.truth.shape
    out: list[tuple[int, int, int, int, int]] = []
    taken = np.zeros((h, w), bool)
    for _ in range(count * 400):
        if len(out) == count:
            break
        kind = BUILDING if len(out) % 2 else CLEARED
        ph, pw = (int(v) for v in rng.integers(size // 2, size + 1, size=2))
        r, c = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
        under = scene.truth[r : r + ph, c : c + pw]
        if (under == (FIELD if kind == BUILDING else FOREST)).mean() < 0.95:
            continue
        if taken[max(r - 8, 0) : r + ph + 8, max(c - 8, 0) : c + pw + 8].any():
            continue
        taken[r : r + ph, c : c + pw] = True
        out.append((kind, r, c, ph, pw))
    return out


def make_change_pair(size: int = 768, gsd: float = 0.5, seed: int = 7, count: int = 24,
                     patch_px: int = 48, brightness: float = 28.0,
                     contrast: float = 0.85) -> ChangePair:
    """BEFORE, AFTER (changed patches plus a global light shift) and the change truth."""
    rng = np.random.default_rng(seed + 100)
    before = make_scene(size, gsd, seed)
    img = before.image.astype(np.float32)
    truth = np.zeros(before.truth.shape, np.uint8)
    patches = _patches(before, count, patch_px, rng)
    yy, xx = np.mgrid[0:size, 0:size]
    for kind, r, c, ph, pw in patches:
        sl = (slice(r, r + ph), slice(c, c + pw))
        if kind == BUILDING:  # a new building: bright roof, darker edge
            img[:, sl[0], sl[1]] = np.array([170, 95, 80], np.float32)[:, None, None]
            img[:, r : r + 3, c : c + pw] = 70
            img[:, sl[0], c : c + 3] = 70
        else:  # cleared forest: bare soil with ruts
            ruts = 10 * np.sin(xx[sl] / 1.7)
            img[:, sl[0], sl[1]] = np.array(SOIL, np.float32)[:, None, None] + ruts
        truth[sl] = kind
    img += rng.normal(0, 3, img.shape).astype(np.float32)  # another exposure's noise
    img = (img - 128.0) * contrast + 128.0 + brightness  # light and season: not change
    after = Scene(np.clip(img, 0, 255).astype(np.uint8), before.truth, before.transform)
    return ChangePair(before, after, truth, patches)


def patch_polygons(pair: ChangePair, which: list[int] | None = None
                   ) -> tuple[list[shapely.Polygon], list[str]]:
    """The changed patches as polygons in the scene's CRS, named by their change class."""
    geoms, names = [], []
    t: rasterio.Affine = pair.before.transform
    for i, (kind, r, c, ph, pw) in enumerate(pair.patches):
        if which is not None and i not in which:
            continue
        x0, y0 = t @ (c, r)
        x1, y1 = t @ (c + pw, r + ph)
        geoms.append(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        names.append(CHANGE_CLASSES[kind])
    return geoms, names


def write_pair(pair: ChangePair, folder: Path) -> tuple[Path, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return write_scene(pair.before, folder / "before.tif"), write_scene(pair.after, folder / "after.tif")
