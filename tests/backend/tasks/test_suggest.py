"""gfm suggest: uncertain places, unlike the labels and each other, as a GeoPackage."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely

from gfm_backend.data.synthetic import draw_training_polygons, make_scene, write_polygons, write_scene
from gfm_backend.errors import InputError
from gfm_backend.tasks.finetune import FinetuneParams, finetune
from gfm_backend.tasks.params import SuggestParams
from gfm_backend.tasks.suggest import suggest
from gfm_backend.tasks.suggest_select import CellStats, CellTable, pick_diverse


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """A 576 px scene, a quick model from a few polygons in one corner of it."""
    root = tmp_path_factory.mktemp("suggest")
    scene = make_scene(size=576, seed=4)
    raster = write_scene(scene, root / "scene.tif")
    geoms, names = draw_training_polygons(scene, per_class=2, box_px=24, max_col=200, seed=2)
    labels = write_polygons(root / "labels.gpkg", geoms, names, scene.crs)
    model = root / "model"
    finetune(FinetuneParams(rasters=[raster], labels=labels, class_field="class", out=model,
                            config="tiny", device="cpu", chips=12, batch_size=4, quick=True,
                            no_onnx=True))
    return {"raster": raster, "labels": labels, "model": model, "root": root}


def test_cell_stats_are_the_means_of_the_blended_probabilities():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], size=(10, 7)).transpose(2, 0, 1).astype(np.float32)
    valid = np.ones((10, 7), dtype=bool)
    valid[0, 0] = False
    stats = CellStats(width=7, height=10, cell=4, num_classes=3)
    stats(0, probs[:, :6], valid[:6])  # two strips, split off the cell grid
    stats(6, probs[:, 6:], valid[6:])
    table = stats.table()
    assert (stats.ny, stats.nx) == (3, 2)
    block = probs[:, 0:4, 0:4].reshape(3, -1)[:, 1:]  # the invalid pixel left out
    entropy = -(block * np.log(block)).sum(axis=0) / np.log(3)
    assert table.uncertainty[0] == pytest.approx(entropy.mean(), rel=1e-5)
    assert table.confidence[0] == pytest.approx(block.max(axis=0).mean(), rel=1e-5)
    assert table.first[0] == block.mean(axis=1).argmax()
    assert table.valid[0] == pytest.approx(15 / 16)
    assert table.valid[5] == pytest.approx(1.0)  # the last cell: 2 rows x 3 columns, all there


def test_the_pick_spreads_and_stays_away_from_what_is_labelled():
    """Equal uncertainty: features like a labelled place's are left for last; cells next
    to a pick are passed over."""
    n = 6
    table = CellTable(row=np.zeros(n, int), col=np.arange(n) * 10, cell=10,
                      valid=np.ones(n), uncertainty=np.array([0.9, 0.9, 0.8, 0.8, 0.7, 0.7]),
                      confidence=np.ones(n), first=np.zeros(n, int), second=np.ones(n, int))
    features = np.eye(n)
    labelled = features[[0]]  # cell 0 looks like a labelled polygon
    picks = pick_diverse(table, np.arange(n), features, labelled, count=3)
    chosen = [p.cell for p in picks]
    assert 0 not in chosen
    assert chosen[0] == 1
    assert all(abs(a - b) > 1 for i, a in enumerate(chosen) for b in chosen[i + 1 :])
    assert all(0 < p.novelty <= 1 for p in picks)


def test_suggest_writes_ranked_squares_apart_from_the_labels(field):
    out = field["root"] / "next.gpkg"
    report = suggest(SuggestParams(raster=field["raster"], model=field["model"], out=out,
                                   count=6, device="cpu"))
    assert report["labels"] == str(field["labels"])  # found in the model's report
    info = pyogrio.read_info(out)
    assert info["features"] == report["suggestions"] == 6
    assert {"rank", "score", "uncertainty", "confidence", "novelty", "class_1", "class_2",
            "hesitates"} <= set(info["fields"])
    with rasterio.open(field["raster"]) as ds:
        assert rasterio.crs.CRS.from_user_input(info["crs"]) == ds.crs
        bounds = shapely.box(*ds.bounds)
    _, _, wkb, values = pyogrio.raw.read(out, columns=["rank", "score", "uncertainty"])
    boxes = shapely.from_wkb(wkb)
    labels = shapely.from_wkb(pyogrio.raw.read(field["labels"])[2])
    covered = shapely.area(shapely.intersection(boxes, shapely.union_all(labels)))
    assert (covered < 0.5 * shapely.area(boxes)).all()  # none half labelled already
    assert shapely.within(boxes, bounds.buffer(1e-6)).all()
    assert list(values[0]) == [1, 2, 3, 4, 5, 6]
    assert (np.diff(values[1]) <= 1e-9).all()  # best first
    side = report["cell_px"] * 0.5  # 0.5 m pixels; cells at the edge are cut there
    assert (shapely.area(boxes) <= side**2 + 1e-6).all() and shapely.area(boxes).max() > 0
    gaps = [shapely.distance(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]]
    assert min(gaps) > 0  # never two touching squares


def test_suggest_refuses_to_write_over_files(field):
    existing = field["root"] / "mine.gpkg"
    existing.write_bytes(b"someone's")
    for out, problem in ((existing, "already exists"), (field["raster"], "give a .gpkg"),
                         (field["labels"], "labels"), (field["model"] / "s.gpkg", "model package")):
        with pytest.raises(InputError, match=problem):
            suggest(SuggestParams(raster=field["raster"], model=field["model"], out=out,
                                  labels=field["labels"], device="cpu"))
    assert existing.read_bytes() == b"someone's"
    trained_on = field["labels"]  # the labels read by default, even with --overwrite
    with pytest.raises(InputError, match="labels"):
        suggest(SuggestParams(raster=field["raster"], model=field["model"], out=trained_on,
                              overwrite=True, device="cpu"))
    assert pyogrio.read_info(trained_on)["features"] > 0


def test_suggest_command_line_and_a_scene_model(field, tmp_path):
    out = tmp_path / "s.gpkg"
    done = subprocess.run([sys.executable, "-m", "gfm_backend.cli", "--quiet", "suggest",
                           str(field["raster"]), "--model", str(field["model"]), "--out", str(out),
                           "--count", "3", "--device", "cpu"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert pyogrio.read_info(out)["features"] == 3
    again = subprocess.run([sys.executable, "-m", "gfm_backend.cli", "--quiet", "suggest",
                            str(field["raster"]), "--model", str(field["model"]), "--out", str(out)],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert "Traceback" not in again.stderr


def test_no_place_left_is_an_empty_layer_and_a_warning(field, tmp_path):
    """Labels over the whole raster: nothing to suggest, said in the report."""
    with rasterio.open(field["raster"]) as ds:
        everywhere = write_polygons(tmp_path / "all.gpkg", [shapely.box(*ds.bounds)], ["field"],
                                    ds.crs.to_string())
    report = suggest(SuggestParams(raster=field["raster"], model=field["model"],
                                   out=tmp_path / "none.gpkg", labels=everywhere, device="cpu"))
    assert report["suggestions"] == 0 and "smaller cell" in report["warnings"][-1]
    assert pyogrio.read_info(tmp_path / "none.gpkg")["features"] == 0


def test_labels_reaching_off_the_raster_are_cut_to_it(field, tmp_path):
    """A polygon whose middle lies off the raster, another wholly off it (labels drawn
    over a larger mosaic): the first counts inside the raster, the second not at all."""
    with rasterio.open(field["raster"]) as ds:
        left, bottom, right, top = ds.bounds
        crs = ds.crs.to_string()
    straddling = shapely.box(right - 10, bottom + 10, right + 200, bottom + 60)
    outside = shapely.box(right + 300, bottom, right + 400, bottom + 100)
    labels = write_polygons(tmp_path / "wide.gpkg", [straddling, outside], ["field", "water"], crs)
    report = suggest(SuggestParams(raster=field["raster"], model=field["model"],
                                   out=tmp_path / "s.gpkg", labels=labels, count=3, device="cpu"))
    assert report["labelled_polygons"] == 1 and report["suggestions"] >= 1
