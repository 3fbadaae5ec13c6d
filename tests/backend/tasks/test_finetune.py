"""Fine-tune: model package contents, label handling and clear errors on bad input."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import rasterio
import shapely
from rasterio.warp import transform_geom

from gfm_backend.data.synthetic import write_polygons
from gfm_backend.errors import InputError
from gfm_backend.package import read_spec
from gfm_backend.tasks.finetune import FinetuneParams, finetune

QUICK = {"config": "tiny", "device": "cpu", "epochs": 1, "chips": 8, "batch_size": 4,
         "onnx": False}


def test_model_package_contents(tiny_model):
    spec = read_spec(tiny_model)
    assert spec.task == "segmentation"
    assert spec.class_names == ["built-up", "field", "forest", "water"]
    assert [c.id for c in spec.classes] == [0, 1, 2, 3]
    assert all(c.color.startswith("#") and len(c.color) == 7 for c in spec.classes)
    assert spec.gsd_m == pytest.approx(0.5)
    assert spec.encoder["embed_dim"] == 32 and spec.tile_size == 192
    assert spec.bands == [1, 2, 3] and spec.scale == [255.0] * 3
    meta = {p.key: p.value for p in onnx.load(str(tiny_model / "model.onnx")).metadata_props}
    for key in ("model_type", "class_names", "resolution", "tiles_size", "tiles_overlap",
                "standardization_mean", "standardization_std", "gfm_model_json"):
        assert key in meta
    assert json.loads(meta["class_names"])["0"] == "built-up"
    assert json.loads(meta["gfm_model_json"]) == json.loads((tiny_model / "model.json").read_text())
    report = json.loads((tiny_model / "report.json").read_text())
    for key in ("per_class", "overall_accuracy", "confusion_matrix", "mean_iou"):
        assert key in report["validation"]
    assert report["split"]["train_polygons"] > 0
    assert set(report["validation"]["per_class"]) == set(spec.class_names)
    assert report["time_s"] > 0
    assert (tiny_model / "training_curve.png").stat().st_size > 1000
    assert (tiny_model / "confusion_matrix.png").stat().st_size > 1000
    # no staging or exporter side files left behind; the manifest says what the package holds
    assert [p.name for p in tiny_model.glob(".*")] == [".gfm-output.json"]
    assert set(json.loads((tiny_model / ".gfm-output.json").read_text())["files"]) == {
        p.name for p in tiny_model.iterdir() if not p.name.startswith(".")}


def test_validation_holds_out_whole_polygons(tiny_model):
    report = json.loads((tiny_model / "report.json").read_text())
    split = report["split"]
    assert split["val_polygons"] >= 1
    assert split["train_polygons"] + split["val_polygons"] == 12


def test_labels_in_other_crs_numeric_field_background(tmp_path, scene, scene_files):
    """Labels in WGS 84 with numeric classes; footprint style (outside = background)."""
    from gfm_backend.data.synthetic import draw_training_polygons

    geoms, names = draw_training_polygons(scene, per_class=2, box_px=24, seed=9)
    keep = [i for i, n in enumerate(names) if n in ("water", "built-up")]
    wgs = [shapely.geometry.shape(transform_geom(scene.crs, "EPSG:4326",
                                                 shapely.geometry.mapping(geoms[i])))
           for i in keep]
    values = [7 if names[i] == "water" else 3 for i in keep]
    labels = write_polygons(tmp_path / "wgs.gpkg", wgs, values, "EPSG:4326", field="code")
    out = tmp_path / "model"
    report = finetune(FinetuneParams([scene_files["raster"]], labels, "code", out,
                                     unlabeled="background", **QUICK))
    spec = read_spec(out)
    assert spec.class_names == ["background", "3", "7"]
    assert report["classes"] == ["background", "3", "7"]


def test_errors_leave_no_model(tmp_path, scene, scene_files):
    raster = scene_files["raster"]
    out = tmp_path / "model"
    far = write_polygons(tmp_path / "far.gpkg", [shapely.box(0, 0, 10, 10)], ["a"], scene.crs)
    with pytest.raises(InputError, match="far.gpkg.*overlap"):
        finetune(FinetuneParams([raster], far, "class", out, **QUICK))
    with pytest.raises(InputError, match="no field 'kind'"):
        finetune(FinetuneParams([raster], scene_files["labels"], "kind", out, **QUICK))
    x0, y0 = scene.transform @ (10, 10)
    one = write_polygons(tmp_path / "one.gpkg", [shapely.box(x0, y0 - 10, x0 + 10, y0)],
                         ["water"], scene.crs)
    with pytest.raises(InputError, match="only one class"):
        finetune(FinetuneParams([raster], one, "class", out, **QUICK))
    empty = write_polygons(tmp_path / "empty.gpkg", [shapely.box(x0, y0 - 10, x0 + 10, y0)],
                           [""], scene.crs)
    with pytest.raises(InputError, match="empty or missing class field"):
        finetune(FinetuneParams([raster], empty, "class", out, **QUICK))
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00garbage")
    with pytest.raises(InputError, match="broken.tif"):
        finetune(FinetuneParams([broken], scene_files["labels"], "class", out, **QUICK))
    assert not out.exists()
    assert not list(tmp_path.glob(".model.partial-*"))


def test_uint16_raster_gets_a_recorded_stretch(tmp_path, scene, scene_files):
    path = tmp_path / "u16.tif"
    with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=3, dtype="uint16",
                       crs=scene.crs, transform=scene.transform) as dst:
        dst.write(scene.image.astype(np.uint16) * 40)
    finetune(FinetuneParams([path], scene_files["labels"], "class", tmp_path / "m", **QUICK))
    spec = read_spec(tmp_path / "m")
    assert all(s > 255 for s in spec.scale)


def test_layer_wise_lr_decay_follows_the_swin_blocks():
    """Deeper blocks learn faster; patch merging goes with the stage it opens; the head at lr."""
    from gfm_backend.models import CONFIGS, build_encoder
    from gfm_backend.models.network import build_network
    from gfm_backend.package import ModelSpec, default_classes
    from gfm_backend.tasks.finetune import _layer_decay_groups

    encoder = build_encoder(CONFIGS["tiny"])
    spec = ModelSpec(task="segmentation", classes=default_classes(["a", "b"]),
                     encoder=encoder.config.to_json(), head={"type": "upernet", "channels": 32})
    net = build_network(spec, encoder)
    groups = _layer_decay_groups(net, 1e-3, 0.9)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(net.encoder.named_parameters())
    assert {id(p) for p in net.parameters()} == set(lr_of)  # every parameter, once
    embed = lr_of[id(named["patch_embed.proj.weight"])]
    first = lr_of[id(named["layers.0.blocks.0.attn.qkv.weight"])]
    merge = lr_of[id(named["layers.1.downsample.reduction.weight"])]
    opens = lr_of[id(named["layers.1.blocks.0.attn.qkv.weight"])]
    last = lr_of[id(named["layers.3.blocks.1.attn.qkv.weight"])]
    assert embed < first < opens < last <= 1e-3
    assert merge == pytest.approx(opens)
    assert first == pytest.approx(embed / 0.9)
    assert all(p.requires_grad for p in net.head.parameters())
    assert lr_of[id(next(net.head.parameters()))] == 1e-3
    no_decay = [g for g in groups if g.get("weight_decay") == 0.0]
    assert any(id(named["layers.0.blocks.0.norm1.weight"]) in {id(p) for p in g["params"]}
               for g in no_decay)


def test_summary_says_unknown_not_zero_for_a_class_without_validation_pixels() -> None:
    from gfm_backend.tasks.finetune import summary

    report = {"classes": ["building", "road"], "split": {}, "time_s": 1.0,
              "warnings": ["no validation polygons: ..."],
              "validation": {"overall_accuracy": 0.9, "mean_iou": 0.7, "per_class": {
                  "building": {"iou": 0.7, "pixels": 120}, "road": {"iou": 0.0, "pixels": 0}}}}
    shown = summary(report)
    assert shown["validation"]["iou"] == {"building": 0.7, "road": None}
    assert shown["warnings"] == ["no validation polygons: ..."]


def test_the_same_seed_trains_the_same_model_whatever_ran_before(scene_files, tmp_path):
    from safetensors.numpy import load_file

    weights = []
    for i, noise in enumerate((1, 2)):
        np.random.seed(noise)  # other code in the process used numpy's global generator
        np.random.random(noise * 10)
        out = tmp_path / f"m{i}"
        finetune(FinetuneParams([scene_files["raster"]], scene_files["labels"], "class", out,
                                config="tiny", device="cpu", epochs=1, chips=8, batch_size=4,
                                no_onnx=True, seed=3))
        weights.append(load_file(str(out / "model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])
