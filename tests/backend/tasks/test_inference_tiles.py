"""Inference tiles apart from training chips, and the int8 runtime: a package trained on
192 px chips can classify 576 px tiles (less overlap, fewer tiles; its map stays close,
though measured slightly worse, so it is not the default), `gfm export --tile-size` makes
a package run them, and ONNX Runtime's int8 model, torch's bf16 and the network compiled
for the CPU (torch-compiled, and with int8 Linear layers) keep the fp32 map."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import rasterio

from gfm_backend.data.synthetic import (
    SCENE_CLASSES,
    draw_training_polygons,
    make_scene,
    write_polygons,
    write_scene,
)
from gfm_backend.errors import InputError
from gfm_backend.package import ModelSpec, default_classes, read_spec
from gfm_backend.runtime.compiled import cache_dir, job_threads
from gfm_backend.tasks.classify import classify
from gfm_backend.tasks.finetune import finetune
from gfm_backend.tasks.metrics import confusion, summarize
from gfm_backend.tasks.params import ClassifyParams, FinetuneParams

SIZE = 512


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiles")
    scene = make_scene(SIZE, seed=4)
    raster = write_scene(scene, root / "scene.tif")
    geoms, names = draw_training_polygons(scene, per_class=4, box_px=32, seed=2)
    labels = write_polygons(root / "labels.gpkg", geoms, names, scene.crs)
    finetune(FinetuneParams([raster], labels, "class", root / "model", config="tiny",
                            device="cpu", epochs=8, chips=48, batch_size=8, patience=8))
    return {"scene": scene, "raster": raster, "model": root / "model", "root": root}


def _run(trained, name: str, **options) -> tuple[np.ndarray, dict]:
    out = trained["root"] / name
    report = classify(ClassifyParams(trained["raster"], trained["model"], out, device="cpu",
                                     no_polygons=True, **options))
    with rasterio.open(out / "classes.tif") as ds:
        classes = ds.read(1)
    to_scene = np.array([SCENE_CLASSES.index(c["name"]) for c in report["classes"]]
                        + [255] * (256 - len(report["classes"])), np.uint8)
    scores = summarize(confusion(to_scene[classes], trained["scene"].truth, 4), list(SCENE_CLASSES))
    return classes, report | {"scores": scores}


@pytest.fixture(scope="module")
def fp32(trained) -> tuple[np.ndarray, dict]:
    """The fp32 torch map every faster runtime is held to, classified once."""
    return _run(trained, "fp32", runtime="torch")


def _assert_keeps_map(reference: tuple[np.ndarray, dict], other: tuple[np.ndarray, dict]) -> None:
    """At least 98.5 % of the pixels the same, and every class's IoU within a point."""
    (ref_classes, ref_report), (classes, report) = reference, other
    assert (ref_classes == classes).mean() >= 0.985
    for name, c in ref_report["scores"]["per_class"].items():
        assert abs(report["scores"]["per_class"][name]["iou"] - c["iou"]) <= 0.01, name


def test_a_new_package_carries_an_int8_model_beside_its_onnx(trained):
    spec = read_spec(trained["model"])
    assert (spec.tile_size, spec.tile_overlap) == (192, 48) and spec.infer_tile_size is None
    for name in ("model.onnx", "model.int8.onnx"):
        model = onnx.load(str(trained["model"] / name))
        assert model.graph.input[0].type.tensor_type.shape.dim[-1].dim_value == 192
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["tiles_size"] == "192" and "gfm_model_json" in meta


def test_576_px_tiles_stay_close_to_192_px_tiles(trained):
    reference, ref_report = _run(trained, "ref")
    larger, report = _run(trained, "large", tile_size=576)
    assert ref_report["tile_size_px"] == 192 and report["tile_size_px"] == 576
    assert report["tiles"] < ref_report["tiles"] and report["tile_overlap_px"] == 64
    assert (larger == reference).mean() >= 0.85
    assert report["scores"]["overall_accuracy"] >= ref_report["scores"]["overall_accuracy"] - 0.05


def test_int8_keeps_the_fp32_map(trained):
    _assert_keeps_map(_run(trained, "onnx", runtime="onnx"),
                      _run(trained, "int8", runtime="onnx-int8"))


def test_bf16_keeps_the_fp32_map(trained, fp32):
    bf16 = _run(trained, "bf16", runtime="torch-bf16")
    assert "(bf16" in bf16[1]["predictor"] and "bf16" not in fp32[1]["predictor"]
    _assert_keeps_map(fp32, bf16)


def test_the_compiled_network_keeps_the_fp32_map_and_is_compiled_once(trained, fp32,
                                                                      monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what torchrun gives its ranks' children
    compiled, report = _run(trained, "compiled", runtime="torch-compiled")
    assert "AOTInductor, compiled in" in report["predictor"]
    assert _kernel_threads(max(cache_dir().glob("gfm-*.pt2"), key=lambda p: p.stat().st_mtime)) \
        == {job_threads()}  # the job's threads, not the compiling child's
    _assert_keeps_map(fp32, (compiled, report))
    again, again_report = _run(trained, "compiled-again", runtime="torch-compiled")
    assert "from the cache" in again_report["predictor"]
    assert again_report["timings_s"]["load_model"] < report["timings_s"]["load_model"] / 4
    assert np.array_equal(again, compiled)


def _kernel_threads(package: Path) -> set[int]:
    """The thread counts a compiled package's kernels were written for."""
    with zipfile.ZipFile(package) as z:
        code = "".join(z.read(n).decode() for n in z.namelist() if n.endswith("kernel.cpp"))
    return {int(n) for n in re.findall(r"omp parallel num_threads\((\d+)\)", code)}


def test_the_compiled_network_with_int8_linear_layers_keeps_the_fp32_map(trained, fp32):
    int8 = _run(trained, "compiled-int8", runtime="torch-compiled-int8")
    assert "(int8 Linear layers, " in int8[1]["predictor"]
    _assert_keeps_map(fp32, int8)


def test_the_compiled_network_gets_the_same_map_with_batches_across_tile_rows(trained,
                                                                             monkeypatch):
    """Its short batches would be padded, so a row's last tiles wait for the next row's:
    the same tiles, blended in the same order, as one row at a time."""
    from gfm_backend.tasks.tiling import TileRun

    carried, report = _run(trained, "carried", runtime="torch-compiled")
    monkeypatch.setattr(TileRun, "carries_tiles", property(lambda self: False))
    by_row, _ = _run(trained, "by-row", runtime="torch-compiled")
    assert report["tiles"] == 16  # 4 rows of 4 tiles: each batch of 8 spans two rows
    assert np.array_equal(carried, by_row)
    for name in ("carried", "by-row"):
        with rasterio.open(trained["root"] / name / "confidence.tif") as ds:
            trained[name] = ds.read(1)
    assert np.array_equal(trained["carried"], trained["by-row"])


def test_the_compiled_network_pads_short_batches_splits_long_ones_and_checks_shapes(trained):
    from gfm_backend.runtime import make_predictor

    spec = read_spec(trained["model"])
    predictor = make_predictor(trained["model"], spec, "torch-compiled", "cpu", batch_size=8)
    x = np.random.default_rng(0).standard_normal((11, 3, 192, 192)).astype(np.float32)
    full = predictor(x)
    assert full.shape == (11, spec.num_classes, 192, 192) and full.dtype == np.float32
    assert np.array_equal(predictor(x[:3]), full[:3])  # padded to 8: the same per tile
    assert np.array_equal(predictor(x[8:]), full[8:])
    with pytest.raises(ValueError, match="takes tiles of"):
        predictor(np.zeros((2, 3, 384, 384), np.float32))  # compiled code would read past


def test_tiles_off_the_window_grid_or_the_onnx_size_are_refused(trained, tmp_path):
    with pytest.raises(InputError, match="multiple of 192"):
        classify(ClassifyParams(trained["raster"], trained["model"], tmp_path / "a",
                                device="cpu", tile_size=200))
    with pytest.raises(InputError, match="exported for 192 px tiles"):
        classify(ClassifyParams(trained["raster"], trained["model"], tmp_path / "b",
                                device="cpu", runtime="onnx", tile_size=384))
    cli = subprocess.run([sys.executable, "-m", "gfm_backend.cli", "--quiet", "classify",
                          str(trained["raster"]), "--model", str(trained["model"]), "--out",
                          str(tmp_path / "c"), "--tile-size", "200"], capture_output=True, text=True)
    assert cli.returncode == 2 and "--tile-size" in cli.stderr and "multiple of 192" in cli.stderr


def test_gfm_export_at_another_tile_with_int8(trained, tmp_path):
    out = tmp_path / "m384.onnx"
    cli = subprocess.run([sys.executable, "-m", "gfm_backend.cli", "--quiet", "export",
                          str(trained["model"]), "--out", str(out), "--tile-size", "384",
                          "--int8"], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    for path in (out, tmp_path / "m384.int8.onnx"):
        model = onnx.load(str(path))
        assert model.graph.input[0].type.tensor_type.shape.dim[-1].dim_value == 384
    assert read_spec(trained["model"]).infer_tile_size is None  # a file elsewhere: package as it was


def test_exporting_a_package_at_576_px_makes_it_classify_576_px_tiles(trained, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(trained["model"], model)
    cli = subprocess.run([sys.executable, "-m", "gfm_backend.cli", "--quiet", "export",
                          str(model), "--tile-size", "576", "--int8"], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    spec = read_spec(model)
    assert (spec.infer_tile_size, spec.infer_tile_overlap) == (576, 64)
    report = classify(ClassifyParams(trained["raster"], model, tmp_path / "out", device="cpu",
                                     runtime="onnx-int8", no_polygons=True))
    assert report["tile_size_px"] == 576


def test_inference_tile_rules():
    spec = ModelSpec(task="segmentation", classes=default_classes(["a", "b"]),
                     encoder={"patch_size": 4, "window_size": 6, "depths": [2, 2, 2, 2]},
                     infer_tile_size=576, infer_tile_overlap=64)
    assert spec.tile_grid == 192
    assert (spec.for_inference().tile_size, spec.for_inference().tile_overlap) == (576, 64)
    assert (spec.for_inference(192).tile_size, spec.for_inference(192).tile_overlap) == (192, 48)
    assert spec.for_inference(384).tile_overlap == 42 and spec.for_inference(768, 0).tile_overlap == 0
    with pytest.raises(ValueError, match="multiple of 192"):
        spec.for_inference(200)
    with pytest.raises(ValueError, match="overlap"):
        spec.for_inference(576, 400)
    old = ModelSpec(task="segmentation", classes=default_classes(["a"]), encoder={})
    assert old.for_inference().tile_size == 192  # packages from before keep their tiles
    scene = ModelSpec(task="scene_classification", classes=default_classes(["a"]), encoder={})
    assert scene.for_inference(576).tile_size == 192  # a scene model's tile is its scene
