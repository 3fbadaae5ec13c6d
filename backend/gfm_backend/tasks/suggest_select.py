"""Where to label next, as numbers: how unsure the model is in each square cell of the
raster (from the blended probabilities classify's map is made of), and a greedy pick of
cells that are unsure *and* unlike what is already labelled or already picked.

Uncertainty alone sends the analyst to twenty spots of one confusing field: the pick
scores a cell by its uncertainty times its novelty, the cosine distance of its encoder
features to the nearest labelled or picked cell (relative to the candidates' typical
distance, capped at 1), and keeps picked cells at least a cell apart on the ground.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_VALID = 0.5  # a cell mostly outside the raster's data is no place to draw


class CellStats:
    """Per-cell sums of the blended probabilities, fed strip by strip (a `ProbsSink`)."""

    def __init__(self, width: int, height: int, cell: int, num_classes: int) -> None:
        self.cell, self.num_classes = cell, num_classes
        self.width, self.height = width, height
        self.ny, self.nx = -(-height // cell), -(-width // cell)
        size = self.ny * self.nx
        self.count = np.zeros(size)
        self.entropy = np.zeros(size)
        self.confidence = np.zeros(size)
        self.probs = np.zeros((num_classes, size))
        self.col_index = np.arange(width) // cell

    def __call__(self, top: int, probs: np.ndarray, valid: np.ndarray) -> None:
        rows = (top + np.arange(probs.shape[1])) // self.cell
        index = (rows[:, None] * self.nx + self.col_index[None, :])[valid]
        p = probs[:, valid]  # (C, valid pixels)
        size = self.ny * self.nx
        self.count += np.bincount(index, minlength=size)
        h = -(p * np.log(np.clip(p, 1e-9, None))).sum(axis=0) / np.log(max(self.num_classes, 2))
        self.entropy += np.bincount(index, weights=h, minlength=size)
        self.confidence += np.bincount(index, weights=p.max(axis=0), minlength=size)
        for k in range(self.num_classes):
            self.probs[k] += np.bincount(index, weights=p[k], minlength=size)

    def table(self) -> CellTable:
        n = np.maximum(self.count, 1)
        rows, cols = np.divmod(np.arange(self.ny * self.nx), self.nx)
        full = (np.minimum(self.cell, self.width - cols * self.cell)
                * np.minimum(self.cell, self.height - rows * self.cell))
        order = np.argsort(-self.probs, axis=0)
        return CellTable(row=rows * self.cell, col=cols * self.cell, cell=self.cell,
                         valid=self.count / np.maximum(full, 1), uncertainty=self.entropy / n,
                         confidence=self.confidence / n, first=order[0],
                         second=order[1] if self.num_classes > 1 else order[0])


@dataclass
class CellTable:
    """Every cell: top-left pixel, share of valid pixels, mean normalised entropy (0 sure,
    1 no idea), mean winning probability and the two most probable classes."""

    row: np.ndarray
    col: np.ndarray
    cell: int
    valid: np.ndarray
    uncertainty: np.ndarray
    confidence: np.ndarray
    first: np.ndarray
    second: np.ndarray

    def candidates(self, pool: int, excluded: np.ndarray) -> np.ndarray:
        """The `pool` most uncertain cells with data that hold no labelled polygon."""
        ok = np.nonzero((self.valid >= MIN_VALID) & ~excluded)[0]
        return ok[np.argsort(-self.uncertainty[ok], kind="stable")[:pool]]


@dataclass
class Pick:
    cell: int  # index into the CellTable
    novelty: float
    score: float


def pick_diverse(table: CellTable, candidates: np.ndarray, features: np.ndarray,
                 labelled: np.ndarray, count: int) -> list[Pick]:
    """Greedy: the candidate with the best uncertainty x novelty, then again with it
    counted as labelled; candidates within a cell's width of a pick are passed over."""
    feats = _unit(features)
    known = _unit(labelled) if len(labelled) else np.zeros((0, feats.shape[1]))
    reference = _typical_distance(feats)
    nearest = np.ones(len(feats)) * np.inf
    if len(known):
        nearest = (1 - feats @ known.T).min(axis=1)
    picks: list[Pick] = []
    open_ = np.ones(len(candidates), dtype=bool)
    centre = np.stack([table.row[candidates], table.col[candidates]], axis=1).astype(float)
    while len(picks) < count and open_.any():
        novelty = np.minimum(nearest / reference, 1.0)
        score = np.where(open_, table.uncertainty[candidates] * novelty, -np.inf)
        best = int(np.argmax(score))
        if not np.isfinite(score[best]):
            break
        picks.append(Pick(int(candidates[best]), float(novelty[best]), float(score[best])))
        gap = np.abs(centre - centre[best]).max(axis=1)
        open_ &= gap > table.cell  # spread on the ground: no neighbouring cells
        nearest = np.minimum(nearest, 1 - feats @ feats[best])
    return picks


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _typical_distance(unit: np.ndarray) -> float:
    """The median cosine distance between candidates: novelty 1 means 'as different as
    two candidates usually are'."""
    if len(unit) < 2:
        return 1.0
    d = 1 - unit @ unit.T
    upper = d[np.triu_indices(len(unit), k=1)]
    return float(max(np.median(upper), 1e-6))
