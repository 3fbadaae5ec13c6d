"""The simulated analyst of `gfm bench accuracy`: does `gfm suggest` save polygons?

Start with a few truth polygons per class, quick fine-tune, score on the held-out raster;
then add polygons of the truth round by round, either those nearest the top suggestions
(what an analyst following the dock's suggestions would draw) or at random, and print the
mIoU against the number of polygons for both strategies.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import rasterio
import shapely

from ..data.labels import read_labels, reproject_geoms, value_name
from ..progress import Progress, silent
from .bench_accuracy import Split, train_and_score
from .params import SuggestParams
from .suggest import suggest

STRATEGIES = ("suggestions", "random")
ANALYST_CELL = 48  # px: the samples are a few hundred px across, half a tile leaves few cells


class TruthPool:
    """The split's truth polygons on its training raster, and the ones drawn so far."""

    def __init__(self, split: Split) -> None:
        labels = read_labels(split.labels, split.class_field)
        with rasterio.open(split.raster) as ds:
            self.crs, bounds = ds.crs, shapely.box(*ds.bounds)
        geoms = np.asarray(reproject_geoms(labels.geoms, labels.crs, self.crs), dtype=object)
        values = np.array([value_name(v) if split.class_field else "object"
                           for v in labels.values], dtype=object)
        on = shapely.intersects(geoms, bounds)
        self.geoms, self.values = geoms[on], values[on]

    def start(self, per_class: int, rng: np.random.Generator) -> list[int]:
        chosen: list[int] = []
        for value in sorted(set(self.values)):
            idx = np.nonzero(self.values == value)[0]
            chosen += rng.choice(idx, min(per_class, len(idx)), replace=False).tolist()
        return chosen

    def write(self, chosen: list[int], path: Path) -> Path:
        pyogrio.raw.write(str(path), shapely.to_wkb(self.geoms[chosen]),
                          [self.values[chosen].astype(object)], ["class"], layer="drawn",
                          driver="GPKG", geometry_type="Unknown", crs=self.crs.to_wkt())
        return path

    def near(self, boxes: np.ndarray, chosen: list[int], count: int) -> list[int]:
        """For each suggestion in rank order, the undrawn polygon nearest to it."""
        added: list[int] = []
        for box in boxes:
            free = [i for i in range(len(self.geoms)) if i not in chosen and i not in added]
            if not free or len(added) == count:
                break
            added.append(free[int(np.argmin(shapely.distance(self.geoms[free], box)))])
        return added

    def random(self, chosen: list[int], count: int, rng: np.random.Generator) -> list[int]:
        free = [i for i in range(len(self.geoms)) if i not in chosen]
        return rng.choice(free, min(count, len(free)), replace=False).tolist() if free else []


def simulate_analyst(split: Split, work: Path, config: str = "tiny", per_class: int = 3,
                     per_round: int = 4, rounds: int = 4, seed: int = 0, chips: int = 48,
                     progress: Progress | None = None) -> dict[str, Any]:
    """mIoU against the number of polygons drawn, following suggestions or at random."""
    progress = progress or silent()
    pool = TruthPool(split)
    encoder = (f"random init {config}", {"config": config})
    curves: dict[str, list[dict[str, Any]]] = {}
    for s, strategy in enumerate(STRATEGIES):
        rng = np.random.default_rng(seed)
        chosen = pool.start(per_class, rng)
        curve = curves.setdefault(strategy, [])
        for r in range(rounds + 1):
            drawn = pool.write(chosen, work / f"{strategy}-{r}.gpkg")
            round_split = replace(split, labels=drawn, class_field="class")
            scored, _ = train_and_score(round_split, encoder, True, work,
                                        {"epochs": 1, "chips": chips})  # quick: no epochs
            miou = scored.scores[split.tests[0].name]["mean_iou"]
            curve.append({"polygons": len(chosen), "mean_iou": miou})
            progress((s * (rounds + 1) + r + 1) / (len(STRATEGIES) * (rounds + 1)),
                     f"analyst ({strategy}): {len(chosen)} polygons")
            if r == rounds:
                break
            new = (_suggested(pool, round_split, scored.model, chosen, per_round, work, r)
                   if strategy == "suggestions" else pool.random(chosen, per_round, rng))
            if not new:
                break
            chosen += new
    return {"split": split.name, "scored_on": split.tests[0].name, "encoder": encoder[0],
            "training": "quick", "start_per_class": per_class, "per_round": per_round,
            "curves": curves, "suggestions_reach_random_final_at": _reach(curves),
            "best": {k: max(c, key=lambda p: p["mean_iou"] or 0.0) for k, c in curves.items()}}


def _suggested(pool: TruthPool, split: Split, model: str, chosen: list[int], count: int,
               work: Path, round_: int) -> list[int]:
    out = work / f"suggested-{round_}.gpkg"
    suggest(SuggestParams(raster=split.raster, model=Path(model), out=out, labels=split.labels,
                          count=3 * count, cell=ANALYST_CELL, device="cpu"))
    _, _, wkb, (ranks,) = pyogrio.raw.read(out, columns=["rank"])
    boxes = shapely.from_wkb(wkb)[np.argsort(ranks)]
    return pool.near(boxes, chosen, count)


def _reach(curves: dict[str, list[dict[str, Any]]]) -> int | None:
    """The fewest polygons with which following suggestions reached the random strategy's
    final mIoU (None: it did not)."""
    target = curves["random"][-1]["mean_iou"] if curves.get("random") else None
    if target is None:
        return None
    return next((p["polygons"] for p in curves["suggestions"]
                 if p["mean_iou"] is not None and p["mean_iou"] >= target), None)
