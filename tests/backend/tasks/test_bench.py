"""Benchmarks run end to end at toy sizes (figures are printed by `make bench`, not asserted)."""

from __future__ import annotations

import pytest

from gfm_backend.data.synthetic import make_scene, write_scene
from gfm_backend.errors import GfmError, InputError
from gfm_backend.tasks import bench
from gfm_backend.tasks.bench import bench_classify, bench_pretrain
from gfm_backend.tasks.geopile import GeopileParams, build_geopile


def test_bench_pretrain_reports_throughput_and_flops():
    r = bench_pretrain("tiny", batch=2, steps=1, warmup=0, device="cpu")
    assert r["images_per_s"] > 0 and r["gflop_per_image"] > 0 and r["achieved_tflop_s"] > 0


def test_bench_pretrain_from_a_geopile_times_the_loader_alone(tmp_path):
    (tmp_path / "src").mkdir()
    write_scene(make_scene(768, seed=3), tmp_path / "src" / "scene.tif")  # 16 chips
    build_geopile(GeopileParams(tmp_path / "src", tmp_path / "pile"))

    r = bench_pretrain("tiny", batch=4, steps=2, warmup=0, device="cpu", teacher=False,
                       attention="sdpa", pile=tmp_path / "pile")

    assert r["data"] == str(tmp_path / "pile") and r["attention"] == "sdpa"
    assert r["images_per_s"] > 0 and r["loader_images_per_s"] > r["images_per_s"]
    with pytest.raises(InputError, match="at least 64 chips"):
        bench_pretrain("tiny", batch=64, steps=1, device="cpu", pile=tmp_path / "pile")


def test_bench_classify_runs_real_classify_and_the_network_alone(tmp_path):
    r = bench_classify(tmp_path, size=700, configs=["tiny"], runtimes=["onnx", "onnx-int8"],
                       repeat=2)

    reference, *rows = r["results"]
    assert reference["reference"] and reference["runtime"] == "torch" and reference["tile_px"] == 192
    assert [(row["runtime"], row["tile_px"]) for row in rows] == [
        ("onnx", 576), ("onnx-int8", 576), ("onnx", 192), ("onnx-int8", 192)]
    for row in rows:
        assert row["repeat"] == 2 and row["tiles"] > 1
        assert row["end_to_end_mpix_s"] > 0 and row["model_only_mpix_s"] > 0 and row["ratio"] > 0
        assert row["load_model_s"] >= 0 and row["peak_rss_mb"] > 0
        assert row["speedup_vs_reference"] > 0 and 0 < row["agreement_vs_reference"] <= 1
        assert set(row["iou_vs_truth"]) == set(reference["iou_vs_truth"])
        assert row["iou_points_vs_reference"] >= 0
    assert rows[0]["tiles"] < reference["tiles"] == rows[2]["tiles"]
    # the bench model's head is trained on the scene: its map is a map, not noise
    assert sum(reference["iou_vs_truth"].values()) / len(reference["iou_vs_truth"]) > 0.3
    assert (tmp_path / "bench_classify.json").exists()
    assert (tmp_path / "classified_tiny_onnx-int8" / "polygons.gpkg").exists()


def test_bench_change_runs_real_detect_change_and_the_network_alone(tmp_path):
    r = bench_classify(tmp_path, size=300, configs=["tiny"], runtimes=["torch"],
                       task="change_detection", tiles=["inference"])

    _, row = r["results"]
    assert r["task"] == "change_detection" and row["tiles"] >= 1 and row["tile_px"] == 576
    assert row["end_to_end_mpix_s"] > 0 and row["model_only_mpix_s"] > 0 and row["ratio"] > 0
    assert (tmp_path / "bench_change.json").exists()
    assert (tmp_path / "changes_tiny_torch" / "change.tif").exists()


def test_a_run_that_fails_says_which_and_why_in_the_childs_words(tmp_path):
    raster = write_scene(make_scene(64, seed=1), tmp_path / "scene.tif")
    with pytest.raises(GfmError) as failed:
        bench._job_run([raster], tmp_path / "no-model", tmp_path / "out", "onnx", "cpu", 8)
    said = str(failed.value)
    assert said.startswith("the bench's classify of no-model with --runtime onnx failed: ")
    assert str(tmp_path / "no-model") in said and "Traceback" not in said
