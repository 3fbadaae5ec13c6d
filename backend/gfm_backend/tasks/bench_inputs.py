"""What `gfm bench classify` and `gfm bench change` run on: a raster tiled from a synthetic
scene (whose truth is known), its later date, and model packages of each encoder shape.

A segmentation bench model has its head trained briefly on the scene (encoder random, as
no pretrained weights ship): a random head's classes are near ties, which any rounding
(bf16, int8) or another tile flips, so agreement figures from it measure nothing. Each
model comes twice: at its training chips (ONNX exported at that size) and at three times
that as its inference tile (ONNX at 576 px), the two tilings the bench compares.
"""

from __future__ import annotations

import copy
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from ..atomic import atomic_path
from ..data.synthetic import (
    SCENE_CLASSES,
    Scene,
    draw_training_polygons,
    make_scene,
    write_polygons,
    write_scene,
)
from ..data.synthetic_change import CHANGE_CLASSES
from ..models import CONFIGS, build_encoder
from ..models.network import build_network, default_head_channels, save_network
from ..package import ModelSpec, default_classes, read_spec, write_spec
from ..progress import silent
from .export import export, export_onnx, quantize_int8

SCENE_PX = 1024  # the bench raster repeats this scene
SCENE_SEED = 1
TRAIN_EPOCHS = 4  # enough for confident classes; speed, not accuracy, is measured
TRAIN_CHIPS = 32


@functools.cache
def bench_scene() -> Scene:
    """Made once per process: the raster, its truth and the training files all use it."""
    return make_scene(SCENE_PX, seed=SCENE_SEED)


def make_bench_raster(path: Path, size: int) -> Path:
    """A size x size RGB GeoTIFF tiled from the bench scene (block by block)."""
    if path.exists():
        with rasterio.open(path) as ds:
            if ds.width == size:
                return path
    scene = bench_scene()
    with tempfile.TemporaryDirectory(dir=path.parent) as sample_dir:
        sample = write_scene(scene, Path(sample_dir) / "sample.tif")  # for its profile
        with rasterio.open(sample) as src:
            profile = src.profile | {"width": size, "height": size}
    with atomic_path(path, suffix=".tif") as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for r in range(0, size, SCENE_PX):
            for c in range(0, size, SCENE_PX):
                h, w = min(SCENE_PX, size - r), min(SCENE_PX, size - c)
                dst.write(scene.image[:, :h, :w], window=rasterio.windows.Window(c, r, w, h))
    return path


def bench_truth(size: int) -> np.ndarray:
    """The bench raster's true classes (indices into SCENE_CLASSES), tiled as the image is."""
    truth = bench_scene().truth
    reps = -(-size // SCENE_PX)
    return np.tile(truth, (reps, reps))[:size, :size]


def make_bench_after(before: Path, path: Path) -> Path:
    """The later date of the bench pair: BEFORE brighter (same grid), written block by block."""
    if path.exists():
        return path
    with rasterio.open(before) as src, atomic_path(path, suffix=".tif") as tmp:
        with rasterio.open(tmp, "w", **src.profile) as dst:
            for _, window in src.block_windows(1):
                block = src.read(window=window).astype(np.int16) + 20
                dst.write(np.clip(block, 0, 255).astype(np.uint8), window=window)
    return path


@dataclass(frozen=True)
class BenchModels:
    """One encoder shape's package at its training chips, and a copy at larger tiles."""

    chip: Path
    inference: Path


def make_bench_models(root: Path, config: str, task: str = "segmentation") -> BenchModels:
    chip = root / f"model_{config}" if task == "segmentation" else root / f"model_{config}_change"
    if not (chip / "model.json").exists():
        if task == "segmentation":
            _train_bench_model(root, chip, config)  # writes its int8 model too
        else:
            _random_bench_model(chip, config, task)
    larger = chip.with_name(chip.name + "_576")
    if not (larger / "model.json").exists():
        tmp = larger.with_name(larger.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(chip, tmp)
        export(tmp, tile=3 * read_spec(chip).tile_size, int8=True, overwrite=True)
        tmp.rename(larger)
    return BenchModels(chip, larger)


def _train_bench_model(root: Path, model_dir: Path, config: str) -> None:
    """The head fine-tuned for a few epochs on the bench scene (encoder frozen, random)."""
    from .finetune import finetune
    from .params import FinetuneParams

    raster, labels = _training_files(root / "bench_training")
    finetune(FinetuneParams(rasters=[raster], labels=labels, class_field="class",
                            out=model_dir, config=config, device="cpu", epochs=TRAIN_EPOCHS,
                            chips=TRAIN_CHIPS, batch_size=8, patience=TRAIN_EPOCHS,
                            name=f"bench-{config}"), silent())


def _training_files(work: Path) -> tuple[Path, Path]:
    """The bench scene and polygons drawn on it, written once for every config."""
    raster, labels = work / "scene.tif", work / "labels.gpkg"
    if not (raster.exists() and labels.exists()):
        scene = bench_scene()
        work.mkdir(parents=True, exist_ok=True)
        with atomic_path(raster, suffix=".tif") as tmp:  # an interrupted run leaves none
            write_scene(scene, tmp)
        geoms, names = draw_training_polygons(scene, per_class=6, box_px=48, seed=2)
        with atomic_path(labels, suffix=".gpkg") as tmp:
            write_polygons(tmp, geoms, names, scene.crs)
    return raster, labels


def _random_bench_model(model_dir: Path, config: str, task: str) -> None:
    """Random weights (the change bench: speed only)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    enc = build_encoder(copy.deepcopy(CONFIGS[config]))
    names = list(CHANGE_CLASSES) if task == "change_detection" else list(SCENE_CLASSES)
    spec = ModelSpec(task=task, classes=default_classes(names),
                     encoder=enc.config.to_json(), gsd_m=0.5, tile_size=enc.config.img_size,
                     tile_overlap=enc.config.img_size // 4,
                     head={"type": "upernet", "channels": default_head_channels(enc.config.embed_dim)},
                     name=f"bench-{config}")
    net = build_network(spec, enc).eval()
    save_network(net, spec, model_dir)
    export_onnx(net, spec, model_dir / "model.onnx")
    quantize_int8(model_dir / "model.onnx")
    write_spec(model_dir, spec)
