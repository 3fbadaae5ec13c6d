"""Benchmarks run end to end at toy sizes (figures are printed by `make bench`, not asserted)."""

from __future__ import annotations

from gfm_backend.tasks.bench import bench_pretrain


def test_bench_pretrain_reports_throughput_and_flops():
    r = bench_pretrain("tiny", batch=2, steps=1, warmup=0, device="cpu")
    assert r["images_per_s"] > 0 and r["gflop_per_image"] > 0 and r["achieved_tflop_s"] > 0
