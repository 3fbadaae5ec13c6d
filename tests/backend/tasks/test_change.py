"""Change detection end to end on synthetic pairs with known changes: fine-tune on the
patches drawn in the left part, detect over the whole pair, score on the unseen right part;
pairs in two CRSs and pixel sizes, without overlap, with nodata in one date, cancelled."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.features import shapes
from rasterio.warp import Resampling, calculate_default_transform, reproject

from gfm_backend.data.synthetic import write_polygons
from gfm_backend.data.synthetic_change import CHANGE_CLASSES, make_change_pair, patch_polygons, write_pair
from gfm_backend.errors import Cancelled, InputError
from gfm_backend.package import read_spec
from gfm_backend.progress import Progress
from gfm_backend.tasks.change_detect import detect_change
from gfm_backend.tasks.change_finetune import finetune_change
from gfm_backend.tasks.change_scores import change_scores
from gfm_backend.tasks.metrics import confusion
from gfm_backend.tasks.params import DetectChangeParams, FinetuneChangeParams

SIZE, SPLIT = 384, 0.6
QUICK = {"config": "tiny", "device": "cpu", "epochs": 8, "chips": 48, "batch_size": 8,
         "patience": 8, "head_channels": 32}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    made = make_change_pair(SIZE, count=16, patch_px=SIZE // 10)
    before, after = write_pair(made, folder)
    left = [i for i, (_, _, c, _, w) in enumerate(made.patches) if c + w < SIZE * SPLIT]
    geoms, names = patch_polygons(made, left)
    labels = write_polygons(folder / "labels.gpkg", geoms, names, made.before.crs)
    return {"made": made, "before": before, "after": after, "labels": labels, "folder": folder}


@pytest.fixture(scope="module")
def model(pair, tmp_path_factory):
    out = tmp_path_factory.mktemp("change-model") / "model"
    report = finetune_change(FinetuneChangeParams(pair["before"], pair["after"],
                                                  labels=pair["labels"], class_field="class",
                                                  out=out, **QUICK))
    return out, report


def _right_part_scores(change_tif, truth) -> dict:
    with rasterio.open(change_tif) as ds:
        pred = ds.read(1)
    right = np.full_like(truth, 255)
    cut = int(SIZE * SPLIT)
    right[:, cut:] = truth[:, cut:]
    return change_scores(confusion(pred, right, len(CHANGE_CLASSES)), list(CHANGE_CLASSES))


def test_a_change_package_carries_both_dates_and_change_scores(model):
    out, report = model
    spec = read_spec(out)
    assert spec.task == "change_detection" and spec.class_names == list(CHANGE_CLASSES)
    assert spec.after_scale is None  # both dates are uint8: one scaling
    validation = report["validation"]
    assert set(validation["change"]) == {"precision", "recall", "f1", "iou"}
    assert set(validation["per_change_class"]) == {"new building", "cleared"}
    assert len(validation["confusion_matrix"]) == 3 and "per_class" in validation
    assert report["before"].endswith("before.tif") and report["after_bands"] == [1, 2, 3]
    onnx_model = onnx.load(str(out / "model.onnx"))
    assert [i.name for i in onnx_model.graph.input] == ["before", "after"]
    meta = {p.key: p.value for p in onnx_model.metadata_props}
    assert json.loads(meta["gfm_model_json"])["task"] == "change_detection"
    assert meta["model_type"] == "ChangeDetector"


def test_changes_are_found_where_nobody_drew_and_a_light_shift_is_no_change(pair, model, tmp_path):
    out = tmp_path / "det"
    report = detect_change(DetectChangeParams(pair["before"], pair["after"], model=model[0],
                                              out=out, device="cpu"))
    scores = _right_part_scores(out / "change.tif", pair["made"].truth)
    # the whole AFTER image is brighter and flatter: a model that read that as change
    # would have a precision near the changed fraction (5 %)
    assert scores["change"]["f1"] > 0.6 and scores["change"]["precision"] > 0.6, scores
    with rasterio.open(pair["before"]) as b, rasterio.open(out / "change.tif") as c:
        assert c.crs == b.crs and c.transform == b.transform and c.shape == b.shape
    assert report["polygon_count"] > 0
    info = pyogrio.read_info(out / "polygons.gpkg")
    assert list(info["fields"]) == ["class_id", "class_name", "area_m2", "mean_confidence"]
    _, _, _, fields = pyogrio.raw.read(out / "polygons.gpkg")
    assert set(fields[1]) <= {"new building", "cleared"}  # changed regions only
    assert np.all((fields[3] > 0.3) & (fields[3] <= 1.0))
    assert (out / "change.qml").is_file() and (out / "polygons.qml").is_file()
    # no change shows the image below (in QGIS's style: a GeoTIFF palette has no alpha)
    assert 'value="0" color="#d9d9d9" label="no change" alpha="0"' in (out / "change.qml").read_text()


def test_torch_onnx_and_the_compiled_network_agree(pair, model, tmp_path):
    maps = {}
    for runtime in ("torch", "onnx", "torch-compiled"):  # compiled: both dates, bf16
        report = detect_change(DetectChangeParams(pair["before"], pair["after"], model=model[0],
                                                  out=tmp_path / runtime, runtime=runtime,
                                                  device="cpu"))
        with rasterio.open(tmp_path / runtime / "change.tif") as ds:
            maps[runtime] = ds.read(1)
    assert "AOTInductor" in report["predictor"]
    assert (maps["torch"] == maps["onnx"]).mean() >= 0.99
    assert (maps["torch"] == maps["torch-compiled"]).mean() >= 0.985


def _warp(src_path, dst_path, crs: str, resolution: float, crop: float = 0.0) -> None:
    """AFTER as another provider delivers it: another CRS and pixel size, a cropped extent."""
    with rasterio.open(src_path) as src:
        left, bottom, right, top = src.bounds
        left += crop * (right - left)
        transform, w, h = calculate_default_transform(src.crs, crs, src.width, src.height,
                                                      left, bottom, right, top,
                                                      resolution=resolution)
        profile = src.profile | {"crs": crs, "transform": transform, "width": w, "height": h,
                                 "nodata": 0}
        with rasterio.open(dst_path, "w", **profile) as dst:
            for b in range(1, src.count + 1):
                reproject(rasterio.band(src, b), rasterio.band(dst, b), dst_nodata=0,
                          resampling=Resampling.bilinear)


def test_after_in_another_crs_and_pixel_size_is_warped_onto_before(pair, model, tmp_path):
    after = tmp_path / "after-3857.tif"
    _warp(pair["after"], after, "EPSG:3857", 0.9, crop=0.25)  # 0.9 m at 45 deg N: ~0.64 m
    out = tmp_path / "det"
    report = detect_change(DetectChangeParams(pair["before"], after, model=model[0], out=out,
                                              device="cpu"))
    with rasterio.open(pair["before"]) as b, rasterio.open(out / "change.tif") as c:
        assert c.crs == b.crs and c.res == b.res
        col, row = ~b.transform * (c.transform.c, c.transform.f)
        assert col == pytest.approx(round(col)) and row == pytest.approx(round(row))  # aligned
        assert 0.2 * SIZE <= col <= 0.3 * SIZE and c.width <= SIZE - col  # the overlap alone
        pred = c.read(1)
    truth = pair["made"].truth[int(row):int(row) + pred.shape[0], int(col):int(col) + pred.shape[1]].copy()
    assert (pred == 255).mean() < 0.02  # nodata only along the warped edge
    truth[pred == 255] = 255
    scores = change_scores(confusion(pred, truth, 3), list(CHANGE_CLASSES))
    assert scores["change"]["f1"] > 0.6, scores
    assert report["overlap_window"]["col_off"] == int(round(col))


def test_a_pair_that_does_not_overlap_is_refused_naming_both(pair, model, tmp_path):
    far = tmp_path / "far.tif"
    with rasterio.open(pair["after"]) as src:
        profile = src.profile | {"transform": src.transform * rasterio.Affine.translation(10_000, 0)}
        with rasterio.open(far, "w", **profile) as dst:
            dst.write(src.read())
    with pytest.raises(InputError, match="do not overlap") as err:
        detect_change(DetectChangeParams(pair["before"], far, model=model[0], out=tmp_path / "x",
                                         device="cpu"))
    assert "before.tif" in str(err.value) and "far.tif" in str(err.value)
    cli = subprocess.run([sys.executable, "-m", "gfm_backend.cli", "--quiet", "detect-change",
                          str(pair["before"]), str(far), "--model", str(model[0]),
                          "--out", str(tmp_path / "y")], capture_output=True, text=True)
    assert cli.returncode == 2 and "do not overlap" in cli.stderr and "Traceback" not in cli.stderr
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_nodata_in_one_date_only_is_255_there(pair, model, tmp_path):
    holed = tmp_path / "after-hole.tif"
    with rasterio.open(pair["after"]) as src:
        data = src.read()
        data[:, 100:160, 200:300] = 0
        with rasterio.open(holed, "w", **(src.profile | {"nodata": 0})) as dst:
            dst.write(data)
    out = tmp_path / "det"
    detect_change(DetectChangeParams(pair["before"], holed, model=model[0], out=out, device="cpu"))
    with rasterio.open(out / "change.tif") as ds:
        pred = ds.read(1)
        assert ds.nodata == 255
    assert (pred[102:158, 202:298] == 255).all() and (pred[:90] != 255).all()


def test_bands_in_another_order_are_matched_by_colour(pair, model, tmp_path):
    bgr = tmp_path / "after-bgr.tif"
    with rasterio.open(pair["after"]) as src:
        with rasterio.open(bgr, "w", **(src.profile | {"photometric": None})) as dst:
            dst.write(src.read()[::-1])
            dst.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red]
    out = tmp_path / "det"
    report = detect_change(DetectChangeParams(pair["before"], bgr, model=model[0], out=out,
                                              device="cpu"))
    assert report["after_bands"] == [3, 2, 1]
    assert _right_part_scores(out / "change.tif", pair["made"].truth)["change"]["f1"] > 0.6


def test_a_classification_model_is_not_a_change_model(pair, tiny_model, tmp_path):
    with pytest.raises(InputError, match="not a change model"):
        detect_change(DetectChangeParams(pair["before"], pair["after"], model=tiny_model,
                                         out=tmp_path / "x", device="cpu"))


def test_cancel_mid_run_leaves_no_finished_looking_output(pair, model, tmp_path):
    messages: list[str] = []
    progress = Progress(report=lambda _, message: messages.append(message),
                        is_cancelled=lambda: sum("tile row" in m for m in messages) >= 2)
    out = tmp_path / "det"
    with pytest.raises(Cancelled):
        detect_change(DetectChangeParams(pair["before"], pair["after"], model=model[0], out=out,
                                         device="cpu", batch_size=1), progress)
    assert not out.exists() or not [p for p in out.iterdir()]


def test_binary_change_without_a_class_field(pair, tmp_path):
    out = tmp_path / "binary"
    report = finetune_change(FinetuneChangeParams(pair["before"], pair["after"],
                                                  labels=pair["labels"], out=out,
                                                  **(QUICK | {"epochs": 2, "no_onnx": True})))
    assert report["classes"] == ["no change", "change"]
    assert read_spec(out).class_names == ["no change", "change"]


def test_real_sample_as_before_with_pasted_changes(real_data, tmp_path):
    """A real orthophoto as BEFORE; AFTER pastes in other real pixels (a SpaceNet roof
    scene) as new patches and darkens the whole image."""
    before = real_data / "tiled_image_1.tif"
    with rasterio.open(before) as src, rasterio.open(real_data / "tiled_image_2.tif") as other:
        img, donor = src.read().astype(np.float32), other.read()
        profile = src.profile
    truth = np.zeros(img.shape[1:], np.uint8)
    rng = np.random.default_rng(1)
    for _ in range(14):
        r, c = (int(v) for v in rng.integers(0, 512 - 48, 2))
        img[:, r:r + 48, c:c + 48] = donor[:, r:r + 48, c:c + 48]
        truth[r:r + 48, c:c + 48] = 1
    img = np.clip(img * 0.85 - 10, 0, 255)
    after = tmp_path / "after.tif"
    with rasterio.open(after, "w", **profile) as dst:
        dst.write(img.astype(np.uint8))
    drawn = shapes(truth[:, :300], mask=truth[:, :300] > 0, transform=profile["transform"])
    polys = [shapely.geometry.shape(g) for g, _ in drawn]
    labels = write_polygons(tmp_path / "labels.gpkg", polys, ["change"] * len(polys),
                            profile["crs"].to_string())
    model = tmp_path / "model"
    finetune_change(FinetuneChangeParams(before, after, labels=labels, out=model,
                                         **(QUICK | {"no_onnx": True})))
    detect_change(DetectChangeParams(before, after, model=model, out=tmp_path / "det", device="cpu"))
    with rasterio.open(tmp_path / "det" / "change.tif") as ds:
        assert ds.crs == CRS.from_user_input(profile["crs"])
        pred = ds.read(1)
    right = np.full_like(truth, 255)
    right[:, 300:] = truth[:, 300:]
    scores = change_scores(confusion(pred, right, 2), ["no change", "change"])
    assert scores["change"]["f1"] is not None and scores["change"]["f1"] > 0.3, scores


def test_a_pair_on_one_grid_is_read_without_the_warper(pair, tmp_path):
    from gfm_backend.data.pair import open_pair

    shifted = tmp_path / "after-shifted.tif"  # the same grid, its extent 40 px to the right
    with rasterio.open(pair["after"]) as src:
        profile = src.profile | {"transform": src.transform * rasterio.Affine.translation(40, 0)}
        with rasterio.open(shifted, "w", **profile) as dst:
            dst.write(src.read())
    with open_pair(pair["before"], shifted, [1, 2, 3]) as direct:
        assert direct.after_offset == (-40, 0) and direct.window.col_off == 40
        raw, valid = direct.read_overlap(rasterio.windows.Window(0, 0, 64, 64))
    with rasterio.open(pair["before"]) as b, rasterio.open(pair["after"]) as a:
        assert (raw[:3] == b.read(window=rasterio.windows.Window(40, 0, 64, 64))).all()
        assert (raw[3:] == a.read(window=rasterio.windows.Window(0, 0, 64, 64))).all()
    assert valid.all()
