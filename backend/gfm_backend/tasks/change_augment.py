"""Training augmentation for change pairs: what differs between two dates but is no change.

Each date gets its own brightness, contrast, gamma and a slight per-band tint (another
sun, season, haze or sensor), so a global shift between the dates never reads as change;
AFTER is shifted by up to `MAX_SHIFT` pixels half of the time (the misregistration every
real pair has); and, for binary change, the dates swap half of the time (change is
symmetric, so the model must not learn which date is which). Works on normalised chips
(N, 2 x bands, H, W) with the models' ImageNet mean and std.
"""

from __future__ import annotations

import numpy as np

from ..package import IMAGENET_MEAN, IMAGENET_STD

MAX_SHIFT = 2
CONTRAST, BRIGHTNESS, GAMMA, TINT = (0.75, 1.33), (-0.12, 0.12), (0.8, 1.25), (0.96, 1.04)


def _photometric(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One date (N, bands, H, W) in 0..1: its own light for each chip."""
    n, bands = v.shape[:2]
    contrast = rng.uniform(*CONTRAST, (n, 1, 1, 1))
    bright = rng.uniform(*BRIGHTNESS, (n, 1, 1, 1))
    gamma = rng.uniform(*GAMMA, (n, 1, 1, 1))
    tint = rng.uniform(*TINT, (n, bands, 1, 1))
    mu = v.mean(axis=(1, 2, 3), keepdims=True)
    out = np.clip(((v - mu) * contrast + mu + bright) * tint, 0.0, 1.0)
    return out ** gamma


def _shift(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each chip moved by up to MAX_SHIFT px (edges repeated), half of them."""
    h, w = v.shape[-2:]
    pad = np.pad(v, ((0, 0), (0, 0), (MAX_SHIFT, MAX_SHIFT), (MAX_SHIFT, MAX_SHIFT)), mode="edge")
    out = v.copy()
    for i in np.flatnonzero(rng.random(len(v)) < 0.5):
        dy, dx = rng.integers(0, 2 * MAX_SHIFT + 1, size=2)
        out[i] = pad[i, :, dy : dy + h, dx : dx + w]
    return out


def change_augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
                   swap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Augment normalised pair chips `x` (N, 2B, H, W); labels `y` stay as they are."""
    bands = x.shape[1] // 2
    mean = np.tile(np.asarray(IMAGENET_MEAN, np.float32), 2)[:, None, None]
    std = np.tile(np.asarray(IMAGENET_STD, np.float32), 2)[:, None, None]
    v = x * std + mean
    before = _photometric(v[:, :bands], rng)
    after = _shift(_photometric(v[:, bands:], rng), rng)
    if swap:
        flip = rng.random(len(v)) < 0.5
        before[flip], after[flip] = after[flip].copy(), before[flip].copy()
    v = np.concatenate([before, after], axis=1)
    return np.ascontiguousarray(((v - mean) / std).astype(np.float32)), y
