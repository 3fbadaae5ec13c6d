"""Quick fine-tune: a logistic regression on frozen features, packaged as a normal model
package (torch and ONNX) that classify runs."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from gfm_backend.data.synthetic import (
    SCENE_CLASSES,
    draw_training_polygons,
    write_polygons,
    write_scene,
)
from gfm_backend.errors import GfmError
from gfm_backend.models.heads import ProbeHead, stage_features
from gfm_backend.models.network import load_network
from gfm_backend.package import read_spec
from gfm_backend.tasks.classify import ClassifyParams, classify
from gfm_backend.tasks.finetune import FinetuneParams, finetune

QUICK = {"config": "tiny", "device": "cpu", "chips": 16, "batch_size": 4, "quick": True}


@pytest.fixture(scope="module")
def quick_model(tmp_path_factory, scene_files):
    out = tmp_path_factory.mktemp("quick") / "model"
    report = finetune(FinetuneParams(rasters=[scene_files["raster"]], labels=scene_files["labels"],
                                     class_field="class", out=out, **QUICK))
    return out, report


def test_probe_head_is_the_linear_layer_on_the_concatenated_stages():
    """Classifying each stage at its own resolution and summing the resized logits gives
    what one 1x1 conv over the resized, concatenated stages gives."""
    torch.manual_seed(0)
    channels = [8, 16, 32, 64]
    feats = [torch.randn(2, c, 24 // 2**i, 24 // 2**i) for i, c in enumerate(channels)]
    head = ProbeHead(channels, 3)
    weight, bias = torch.randn(3, sum(channels)), torch.randn(3)
    head.set_linear(weight, bias)
    stacked = stage_features(feats)
    expected = torch.einsum("nchw,kc->nkhw", stacked, weight) + bias[None, :, None, None]
    assert torch.allclose(head(feats), expected, atol=1e-4)
    pooled = ProbeHead(channels, 3, pooled=True)
    pooled.set_linear(weight, bias)
    assert torch.allclose(pooled(feats), stage_features(feats, pooled=True) @ weight.T + bias,
                          atol=1e-4)


def test_quick_package_classifies_like_any_other(quick_model, scene, scene_files, tmp_path):
    model, report = quick_model
    spec = read_spec(model)
    assert spec.head == {"type": "probe"}
    assert report["training"].startswith("quick")
    assert [h["stage"] for h in report["history"]] == ["quick"] * 3
    assert report["validation"]["mean_iou"] > 0.5
    for name in ("model.safetensors", "model.onnx", "model.int8.onnx", "training_curve.png",
                 "confusion_matrix.png", "report.json"):
        assert (model / name).is_file(), name
    maps = {}
    for runtime in ("torch", "onnx"):
        out = tmp_path / runtime
        classify(ClassifyParams(raster=scene_files["raster"], model=model, out=out,
                                runtime=runtime, device="cpu", no_polygons=True))
        with rasterio.open(out / "classes.tif") as ds, rasterio.open(scene_files["raster"]) as src:
            assert (ds.crs, ds.transform) == (src.crs, src.transform)
            maps[runtime] = ds.read(1)
    assert (maps["torch"] == maps["onnx"]).mean() >= 0.99
    names = read_spec(model).class_names
    truth = np.array([names.index(n) for n in SCENE_CLASSES])[scene.truth]
    assert (maps["torch"] == truth).mean() > 0.6


def test_the_head_reproduces_the_fitted_regression(quick_model):
    """The weights in the package are the regression's (the scaler folded in): the
    network's own stride-4 logits pick the class at the labelled points it was fitted on."""
    model, report = quick_model
    net = load_network(model, read_spec(model))
    x = torch.rand(1, 3, 192, 192)
    with torch.no_grad():
        feats = net.encoder(x)
        direct = net.head(feats)
        assert direct.shape == (1, len(report["classes"]), 48, 48)
        stacked = stage_features(feats)
        head = net.head
        assert isinstance(head, ProbeHead)
        weight = torch.cat([c.weight[:, :, 0, 0] for c in head.per_stage], dim=1)
        linear = torch.einsum("nchw,kc->nkhw", stacked, weight) + head.bias[None, :, None, None]
    assert torch.allclose(direct, linear, atol=1e-3)


def test_quick_scene_classification(scene_files, tmp_path):
    model = tmp_path / "scenes"
    finetune(FinetuneParams(rasters=[scene_files["raster"]], labels=scene_files["labels"],
                            class_field="class", out=model, task="scene_classification",
                            no_onnx=True, **QUICK))
    report = classify(ClassifyParams(raster=scene_files["raster"], model=model,
                                     out=tmp_path / "out", device="cpu"))
    assert report["tiles"] == 4


def test_quick_needs_two_classes_of_pixels(scene, tmp_path):
    """One class drawn and nothing else labelled: refused in words, no package left."""
    raster = write_scene(scene, tmp_path / "scene.tif")
    geoms, _ = draw_training_polygons(scene, per_class=2, box_px=24, seed=5)
    one = write_polygons(tmp_path / "one.gpkg", geoms, ["forest"] * len(geoms), scene.crs)
    with pytest.raises(GfmError, match="one class"):
        finetune(FinetuneParams(rasters=[raster], labels=one, class_field="class",
                                out=tmp_path / "m", no_onnx=True, **QUICK))
    assert not (tmp_path / "m").exists()
