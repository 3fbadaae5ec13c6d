"""Backend fixtures: a synthetic scene, analyst-style polygons and a real fine-tuned tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from gfm_backend.data.synthetic import (
    draw_training_polygons,
    make_scene,
    write_polygons,
    write_scene,
)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny shapes: on a busy 2-core machine one thread is ~30x faster than two (no
    OpenMP hand-offs between cores that other processes hold)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def scene():
    return make_scene(size=256, seed=11)


@pytest.fixture(scope="session")
def scene_files(tmp_path_factory, scene) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scene")
    raster = write_scene(scene, root / "scene.tif")
    geoms, names = draw_training_polygons(scene, per_class=3, box_px=24, seed=5)
    labels = write_polygons(root / "labels.gpkg", geoms, names, scene.crs)
    return {"raster": raster, "labels": labels, "root": root}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, scene_files) -> Path:
    """A model package made by the real fine-tuning code (a few quick epochs)."""
    from gfm_backend.tasks.finetune import FinetuneParams, finetune

    out = tmp_path_factory.mktemp("models") / "tiny"
    finetune(FinetuneParams(
        rasters=[scene_files["raster"]], labels=scene_files["labels"], class_field="class",
        out=out, config="tiny", device="cpu", epochs=2, encoder_epochs=1, chips=16,
        batch_size=4, seed=0,
    ))
    return out
