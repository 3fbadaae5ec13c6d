"""gfm bench accuracy: the splits of the real samples, their truth on each grid, the
forest baseline, and the simulated analyst (suggestions against random polygons)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio

from gfm_backend.data.synthetic import draw_training_polygons, make_scene, write_polygons, write_scene
from gfm_backend.tasks.bench_accuracy import (
    Split,
    Truth,
    bench_accuracy,
    forest_baseline,
    real_splits,
    truth_on,
)
from gfm_backend.tasks.bench_analyst import simulate_analyst


def test_without_the_samples_it_says_so_and_exits_cleanly(tmp_path, monkeypatch):
    monkeypatch.delenv("GFM_REAL_DATA", raising=False)
    assert "GFM_REAL_DATA" in bench_accuracy(tmp_path / "out")["skipped"]
    (tmp_path / "empty").mkdir()
    assert "none of the real samples" in bench_accuracy(tmp_path / "out",
                                                        data=tmp_path / "empty")["skipped"]
    done = subprocess.run([sys.executable, "-m", "gfm_backend.cli", "--quiet", "bench", "accuracy",
                           "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no real samples" in json.loads(done.stdout)["skipped"]


def test_the_real_splits_and_their_truth(real_data, tmp_path):
    splits = {s.name: s for s in real_splits(real_data, tmp_path)}
    assert set(splits) == {"New Brunswick (BakerLake)", "buildings"}
    buildings = splits["buildings"]
    names = ["background", "buildings"]
    drawn = truth_on(buildings, None, names)  # the mask drawn as polygons, burnt back
    with rasterio.open(real_data / "tiled_label_1.tif") as ds:
        mask = ds.read(1)
    assert ((drawn == 1) == (mask == 1)).mean() > 0.99
    vegas = next(t for t in buildings.tests if t.name == "Las Vegas")
    truth = truth_on(buildings, vegas, names)
    assert 0 < (truth == 1).sum() < truth.size and (truth != 255).all()
    nb = splits["New Brunswick (BakerLake)"]
    nb_truth = truth_on(nb, nb.tests[0], ["Building", "Hydro", "Road", "Vegetation"])
    assert (nb_truth == 255).any() and (nb_truth != 255).any()  # unlabelled: not scored


def test_the_forest_baseline_on_the_building_tiles(real_data, tmp_path):
    buildings = next(s for s in real_splits(real_data, tmp_path) if s.name == "buildings")
    scored = forest_baseline(buildings, ["background", "buildings"])
    assert set(scored.scores) == {"tile 2", "Las Vegas"}
    assert all(0 <= s["mean_iou"] <= 1 for s in scored.scores.values())
    assert scored.scores["tile 2"]["iou"]["background"] > 0.5


def test_the_simulated_analyst_follows_suggestions_and_random_polygons(tmp_path):
    """On a synthetic scene: both strategies grow the training set round by round."""
    scene = make_scene(size=320, seed=8)
    train = write_scene(scene, tmp_path / "train.tif")
    geoms, names = draw_training_polygons(scene, per_class=5, box_px=20, seed=3)
    labels = write_polygons(tmp_path / "truth.gpkg", geoms, names, scene.crs)
    split = Split("synthetic", train, labels, "class", "ignore",
                  (Truth("same scene", train, polygons=labels, field="class"),))
    result = simulate_analyst(split, tmp_path, per_class=2, per_round=2, rounds=1, chips=12)
    for strategy in ("suggestions", "random"):
        curve = result["curves"][strategy]
        assert [p["polygons"] for p in curve] == [8, 10]
        assert all(p["mean_iou"] is not None for p in curve)
    assert result["suggestions_reach_random_final_at"] in (None, 8, 10)
    assert set(result["best"]) == {"suggestions", "random"}
    assert np.isfinite(result["curves"]["random"][-1]["mean_iou"])


@pytest.mark.slow
def test_bench_accuracy_end_to_end(real_data, tmp_path):
    result = bench_accuracy(tmp_path / "out", data=real_data, configs=["tiny"], epochs=1, chips=8)
    rows = result["splits"]["buildings"]["rows"]
    assert [r["method"] for r in rows] == ["full", "quick", "pixel random forest"]
    assert result["analyst"]["curves"]["random"]
