"""Classify layer on real GeoTIFFs with a real fine-tuned model package."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.transform import from_origin

from gfm_backend.errors import Cancelled, InputError
from gfm_backend.progress import Progress
from gfm_backend.tasks.blending import CONFIDENCE_STEPS
from gfm_backend.tasks.classify import ClassifyParams, classify


@pytest.fixture(scope="module")
def classified(tmp_path_factory, scene_files, tiny_model):
    out = tmp_path_factory.mktemp("classified")
    report = classify(ClassifyParams(scene_files["raster"], tiny_model, out, device="cpu"))
    return out, report


def test_outputs_keep_georeferencing(classified, scene_files):
    out, report = classified
    with rasterio.open(scene_files["raster"]) as src, rasterio.open(out / "classes.tif") as cls, \
            rasterio.open(out / "confidence.tif") as conf:
        for ds in (cls, conf):
            assert ds.crs == src.crs
            assert ds.transform == src.transform
            assert (ds.width, ds.height) == (src.width, src.height)
        assert cls.dtypes[0] == "uint8" and cls.nodata == 255
        assert conf.dtypes[0] == "float32"
        assert cls.block_shapes == [(256, 256)]
        # the staged rasters are ZSTD; the COGs an analyst opens are DEFLATE, read everywhere
        assert cls.compression.name == conf.compression.name == "deflate"
        assert cls.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" == conf.tags(ns="IMAGE_STRUCTURE")["LAYOUT"]
        cmap = cls.colormap(1)
        classes = cls.read(1)
        c = conf.read(1)
    names = [c["name"] for c in report["classes"]]
    assert set(np.unique(classes)) <= set(range(len(names)))
    assert cmap[0][:3] == tuple(int(report["classes"][0]["color"][i : i + 2], 16) for i in (1, 3, 5))
    assert c.min() >= 0.0 and c.max() <= 1.0 + 1e-6
    steps = c * CONFIDENCE_STEPS
    np.testing.assert_array_equal(steps, np.rint(steps))  # as documented
    assert (out / "classes.qml").exists() and (out / "classes.tif.aux.xml").exists()
    saved = json.loads((out / "report.json").read_text())
    assert saved["class_pixels"] == report["class_pixels"]
    assert sum(saved["class_pixels"].values()) == 256 * 256


def test_the_default_runtime_is_chosen_for_the_machine(classified):
    _, report = classified
    assert report["runtime"] == "auto" and "; --runtime auto chose " in report["predictor"]


def test_polygons_fields_and_crs(classified, scene_files):
    out, report = classified
    info = pyogrio.read_info(out / "polygons.gpkg")
    assert {"class_id", "class_name", "area_m2"} <= set(info["fields"])
    with rasterio.open(scene_files["raster"]) as src:
        assert rasterio.crs.CRS.from_user_input(info["crs"]) == src.crs
    _, _, _, fields = pyogrio.raw.read(out / "polygons.gpkg", columns=["class_id", "area_m2"])
    assert len(fields[0]) == report["polygon_count"] > 0
    # every pixel is classified, so the polygons tile the scene (256 px * 0.5 m)^2
    assert fields[1].sum() == pytest.approx(128.0 * 128.0)


def test_learned_something(classified, scene):
    out, report = classified
    with rasterio.open(out / "classes.tif") as ds:
        pred = ds.read(1)
    names = [c["name"] for c in report["classes"]]
    from gfm_backend.data.synthetic import SCENE_CLASSES

    truth = np.array([names.index(SCENE_CLASSES[t]) for t in range(4)])[scene.truth]
    assert (pred == truth).mean() > 0.5  # a two-epoch model; the demo trains properly


def test_onnx_agrees_with_torch(classified, scene_files, tiny_model, tmp_path):
    out, _ = classified
    classify(ClassifyParams(scene_files["raster"], tiny_model, tmp_path, runtime="onnx",
                            device="cpu", polygons=False))
    with rasterio.open(out / "classes.tif") as a, rasterio.open(tmp_path / "classes.tif") as b:
        agree = (a.read(1) == b.read(1)).mean()
    assert agree >= 0.99
    assert not (tmp_path / "polygons.gpkg").exists()


def test_onnx_runtime_never_loads_torch(scene_files, tiny_model, tmp_path):
    """torch alone is ~0.5 GB resident: an ONNX classify must not pay for it."""
    code = (
        "import sys; from gfm_backend.cli import main; "
        f"rc = main(['--quiet', 'classify', {str(scene_files['raster'])!r}, '--model', "
        f"{str(tiny_model)!r}, '--out', {str(tmp_path / 'out')!r}, '--runtime', 'onnx']); "
        "assert rc == 0, rc; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "out" / "polygons.gpkg").exists()


def test_nodata_and_resampling(tmp_path, scene, tiny_model):
    """A raster at a quarter of the model's pixel size, with a nodata border."""
    img = np.repeat(np.repeat(scene.image[:, :96, :96], 2, axis=1), 2, axis=2)
    img[:, :10, :] = 0
    path = tmp_path / "fine.tif"
    with rasterio.open(path, "w", driver="GTiff", width=192, height=192, count=3, dtype="uint8",
                       crs=scene.crs, transform=from_origin(500000, 5000000, 0.25, 0.25),
                       nodata=0) as dst:
        dst.write(img)
    report = classify(ClassifyParams(path, tiny_model, tmp_path / "out", device="cpu"))
    assert any("resampled" in w for w in report["warnings"])
    with rasterio.open(tmp_path / "out" / "classes.tif") as ds:
        assert (ds.width, ds.height) == (192, 192)
        classes = ds.read(1)
    assert (classes[:10] == 255).all()
    assert (classes[10:] != 255).all()


def test_cancel_leaves_no_outputs(tmp_path, scene_files, tiny_model):
    progress = Progress()
    progress.cancel()
    with pytest.raises(Cancelled):
        classify(ClassifyParams(scene_files["raster"], tiny_model, tmp_path / "out"), progress)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not list(tmp_path.glob(".out.partial-*")) and not (tmp_path / "out" / ".gfm-writing").exists()


def test_bad_inputs_name_the_file(tmp_path, tiny_model, scene_files):
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(InputError, match="notes.tif"):
        classify(ClassifyParams(text, tiny_model, tmp_path / "o"))
    with pytest.raises(InputError, match="model.json"):
        classify(ClassifyParams(scene_files["raster"], tmp_path, tmp_path / "o"))
    one_band = tmp_path / "gray.tif"
    with rasterio.open(one_band, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(0, 8, 1, 1)) as dst:
        dst.write(np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(InputError, match="gray.tif.*band"):
        classify(ClassifyParams(one_band, tiny_model, tmp_path / "o"))


@pytest.mark.parametrize("declared", [False, True])
def test_nan_pixels_are_nodata_and_never_spread(classified, scene_files, tiny_model, tmp_path,
                                                declared):
    """A float raster whose top half is NaN (with or without nodata=NaN declared): the top
    half is nodata in the outputs and the bottom half is classified as usual."""
    out, _ = classified
    with rasterio.open(scene_files["raster"]) as src:
        data = src.read().astype(np.float32)
        profile = src.profile | {"dtype": "float32", "nodata": float("nan") if declared else None}
    half = data.shape[1] // 2
    data[:, :half] = np.nan
    data[0, half + 5, 7] = np.inf  # a stray infinity is nodata too
    path = tmp_path / "nan.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    classify(ClassifyParams(path, tiny_model, tmp_path / "o", device="cpu", polygons=False))
    with rasterio.open(tmp_path / "o" / "classes.tif") as c, \
            rasterio.open(tmp_path / "o" / "confidence.tif") as f, \
            rasterio.open(out / "classes.tif") as ref:
        classes, conf, expected = c.read(1), f.read(1), ref.read(1)
    assert (classes[:half] == 255).all() and (conf[:half] == -1).all()
    assert classes[half + 5, 7] == 255
    assert np.isfinite(conf).all() and (conf[half:] <= 1).all()
    bottom = classes[half + 64:]  # clear of the tiles that straddle the NaN edge
    assert (bottom != 255).all()
    assert (bottom == expected[half + 64:]).mean() > 0.9
