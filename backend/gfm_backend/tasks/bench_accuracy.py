"""`gfm bench accuracy`: how good the maps are on the real samples, as figures.

Each split trains on one raster and scores on others the model never saw:

- New Brunswick: the 1 m orthophoto's first crop with the BakerLake polygons (field
  Niveau_2), scored on the second crop against the same polygons;
- buildings: tile 1 (0.3 m) with its building mask drawn as polygons, scored on tile 2
  (0.15 m) and on the SpaceNet Las Vegas crop (WorldView-3, 0.27 m) against its footprints.

For every encoder at hand (the named weights installed in the backend's store, random-init
tiny and base otherwise) a full and a quick fine-tune, and a pixel random forest on the
same training pixels (what a classic GIS classifier gets): per-class IoU, mIoU and the
time taken, all in one run. Figures, not tests; without the samples it says so.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import rasterio
import rasterio.features
import shapely

from ..atomic import write_text_atomic
from ..data.labels import read_labels, reproject_geoms, value_name
from ..progress import Progress, silent
from .metrics import confusion, summarize

REAL_ENV = "GFM_REAL_DATA"
IGNORE = 255
RF_SAMPLES_PER_CLASS = 20_000
BUILDINGS = "buildings"  # the drawn masks' layer: a fine-tune without a field names the class so


@dataclass(frozen=True)
class Truth:
    """Where a split is scored: a raster and its truth, polygons (a class field, the rest
    ignored or background) or a 0/1 building mask."""

    name: str
    raster: Path
    polygons: Path | None = None
    field: str | None = None  # the polygons' class field (None: all of the split's one class)
    mask: Path | None = None


@dataclass(frozen=True)
class Split:
    name: str
    raster: Path
    labels: Path  # training polygons
    class_field: str | None
    unlabeled: str  # "ignore" or "background"
    tests: tuple[Truth, ...]
    single_name: str | None = None  # the class of footprint polygons without a field


@dataclass
class Scored:
    """A model (or the forest) scored on each truth of its split."""

    method: str
    encoder: str
    train_s: float
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    model: str = ""  # the package trained (empty for the forest)


def real_splits(data: Path, work: Path) -> list[Split]:
    """The splits the samples in `data` make (the building mask drawn as polygons in `work`)."""
    nb = [data / f"23322E759967N_clipped_1m_{i}of2.tif" for i in (1, 2)]
    baker = data / "BakerLake_2017_clipped.gpkg"
    vegas = data / "SpaceNet_AOI_2_Las_Vegas-056155973080_01_P001-WV03-RGB.tif"
    footprints = data / "SpaceNet_AOI_2_Las_Vegas-056155973080_01_P001-WV03.gpkg"
    splits = []
    if all(p.exists() for p in (*nb, baker)):
        splits.append(Split("New Brunswick (BakerLake)", nb[0], baker, "Niveau_2", "ignore",
                            (Truth("second crop", nb[1], polygons=baker, field="Niveau_2"),)))
    tiles = [data / f"tiled_{kind}_{i}.tif" for i in (1, 2) for kind in ("image", "label")]
    if all(p.exists() for p in tiles):
        drawn = mask_polygons(tiles[1], work / "tile1-buildings.gpkg")
        tests = [Truth("tile 2", tiles[2], mask=tiles[3])]
        if vegas.exists() and footprints.exists():
            tests.append(Truth("Las Vegas", vegas, polygons=footprints))
        splits.append(Split("buildings", tiles[0], drawn, None, "background", tuple(tests),
                            single_name=BUILDINGS))
    return splits


def mask_polygons(mask: Path, out: Path) -> Path:
    """A 0/1 building mask as the polygons an analyst would have drawn (one class, no field)."""
    with rasterio.open(mask) as ds:
        shapes = [shapely.geometry.shape(g) for g, v in
                  rasterio.features.shapes(ds.read(1), transform=ds.transform) if v == 1]
        crs = ds.crs.to_wkt()
    pyogrio.raw.write(str(out), shapely.to_wkb(np.array(shapes, dtype=object)), [], [],
                      layer=BUILDINGS, driver="GPKG", geometry_type="Polygon", crs=crs)
    return out


def truth_on(split: Split, truth: Truth | None, names: list[str]) -> np.ndarray:
    """The truth as class ids of `names` on the raster's grid (255: not scored). `truth`
    None: the split's own training polygons on its training raster."""
    raster = truth.raster if truth else split.raster
    with rasterio.open(raster) as ds:
        shape, transform, crs = (ds.height, ds.width), ds.transform, ds.crs
    background = split.unlabeled == "background"
    out = np.full(shape, names.index("background") if background else IGNORE, np.uint8)
    if truth is not None and truth.mask is not None:
        with rasterio.open(truth.mask) as ds:
            out[ds.read(1) == 1] = names.index(split.single_name or "")
        return out
    if truth is not None and truth.polygons is not None:
        source, field_ = truth.polygons, truth.field
    else:
        source, field_ = split.labels, split.class_field
    labels = read_labels(source, field_)
    geoms = reproject_geoms(labels.geoms, labels.crs, crs)
    values = [value_name(v) for v in labels.values] if field_ else \
        [split.single_name or ""] * len(labels.values)
    pairs = [(g, names.index(v)) for g, v in zip(geoms, values, strict=True) if v in names]
    if pairs:
        rasterio.features.rasterize(pairs, out=out, transform=transform)
    return out


def score_map(predicted: np.ndarray, truth: np.ndarray, names: list[str]) -> dict[str, Any]:
    s = summarize(confusion(predicted, truth, len(names)), names)
    return {"mean_iou": s["mean_iou"], "overall_accuracy": s["overall_accuracy"],
            "iou": {n: c["iou"] for n, c in s["per_class"].items() if c["pixels"]}}


def encoders_at_hand(configs: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """The named weights installed in the backend's store, then random-init `configs`."""
    from ..weights.store import WeightsStore

    named = [(str(r["name"]), {"encoder": str(r["name"])}) for r in WeightsStore.default().records()
             if r.get("name")]
    return named + [(f"random init {c}", {"config": c}) for c in configs]


def train_and_score(split: Split, encoder: tuple[str, dict[str, Any]], quick: bool,
                    work: Path, budget: dict[str, int]) -> tuple[Scored, list[str]]:
    """Fine-tune (full or quick) on the split, classify each test raster, score it."""
    from .classify import ClassifyParams, classify
    from .finetune import FinetuneParams, finetune

    label, choice = encoder
    model = Path(tempfile.mkdtemp(dir=work)) / "model"
    t0 = time.perf_counter()
    finetune(FinetuneParams(
        rasters=[split.raster], labels=split.labels, class_field=split.class_field, out=model,
        unlabeled=split.unlabeled, device="cpu", quick=quick, no_onnx=True,
        epochs=budget["epochs"], chips=budget["chips"], batch_size=4, seed=0, **choice))
    result = Scored("quick" if quick else "full", label, round(time.perf_counter() - t0, 1),
                    model=str(model))
    from ..package import read_spec

    names = read_spec(model).class_names
    for truth in split.tests:
        out = model.parent / f"classified-{len(result.scores)}"
        classify(ClassifyParams(raster=truth.raster, model=model, out=out, device="cpu",
                                no_polygons=True))
        with rasterio.open(out / "classes.tif") as ds:
            result.scores[truth.name] = score_map(ds.read(1), truth_on(split, truth, names), names)
    return result, names


def forest_baseline(split: Split, names: list[str], seed: int = 0) -> Scored:
    """A random forest on the pixels' band values, trained on the same polygons."""
    from sklearn.ensemble import RandomForestClassifier

    t0 = time.perf_counter()
    x, y = _pixels(split.raster), truth_on(split, None, names).ravel()
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.choice(np.nonzero(y == c)[0], min((y == c).sum(),
                           RF_SAMPLES_PER_CLASS), replace=False) for c in np.unique(y[y != IGNORE])])
    forest = RandomForestClassifier(n_estimators=100, n_jobs=os.cpu_count(), random_state=seed)
    forest.fit(x[keep], y[keep])
    result = Scored("pixel random forest", "(bands only)", 0.0)
    for truth in split.tests:
        with rasterio.open(truth.raster) as ds:
            shape = (ds.height, ds.width)
        predicted = forest.predict(_pixels(truth.raster)).reshape(shape).astype(np.uint8)
        result.scores[truth.name] = score_map(predicted, truth_on(split, truth, names), names)
    result.train_s = round(time.perf_counter() - t0, 1)
    return result


def _pixels(raster: Path) -> np.ndarray:
    with rasterio.open(raster) as ds:
        bands = ds.read(list(range(1, min(ds.count, 3) + 1))).astype(np.float32)
    return bands.reshape(bands.shape[0], -1).T / 255.0


def bench_accuracy(out: Path, data: Path | None = None, configs: list[str] | None = None,
                   epochs: int = 8, chips: int = 48, analyst: bool = True,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Every split x encoder x (full, quick), the forest, and the simulated analyst."""
    progress = progress or silent()
    data = data or (Path(os.environ[REAL_ENV]) if os.environ.get(REAL_ENV) else None)
    if data is None or not data.is_dir():
        return {"skipped": f"no real samples: set {REAL_ENV} to their folder "
                f"(or pass --data); looked at {data or '(not set)'}"}
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out, prefix=".work-"))
    splits = real_splits(data, work)
    if not splits:
        return {"skipped": f"{data} holds none of the real samples this benchmark reads"}
    encoders = encoders_at_hand(configs or ["tiny", "base"])
    budget = {"epochs": epochs, "chips": chips}
    results: dict[str, Any] = {"data": str(data), "budget": budget, "splits": {}}
    steps = len(splits) * (2 * len(encoders) + 1)
    done = 0
    for split in splits:
        rows: list[dict[str, Any]] = []
        names: list[str] = []
        for encoder in encoders:
            for quick in (False, True):
                progress.check()
                scored, names = train_and_score(split, encoder, quick, work, budget)
                rows.append(scored.__dict__)
                done += 1
                progress(done / steps * (0.6 if analyst else 1.0),
                         f"{split.name}: {encoder[0]} {scored.method}")
        rows.append(forest_baseline(split, names).__dict__)
        done += 1
        results["splits"][split.name] = {"classes": names, "rows": rows}
    if analyst:
        from .bench_analyst import simulate_analyst

        results["analyst"] = simulate_analyst(splits[0], work, progress=progress.span(0.6, 1.0))
    shutil.rmtree(work, ignore_errors=True)  # the models and maps made for scoring
    write_text_atomic(out / "accuracy.json", json.dumps(results, indent=2))
    return results
