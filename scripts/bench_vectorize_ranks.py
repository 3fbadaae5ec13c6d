"""Time vectorizing a noisy class raster in one process and in N torchrun ranks (by hand).

    .venv/bin/python scripts/bench_vectorize_ranks.py [--size 8192] [--ranks 2] [--out DIR]

Writes DIR/classes.tif (32-px blocks of random classes, 0.2 % pixel noise and 0.1 %
nodata: about 2,500 polygons a megapixel, the density of an untrained model's noise map), vectorizes it with
`vectorize_classes`, then with `vectorize_ranked` + `merge_bands` under torchrun (gloo),
prints the seconds of each and checks that both give the same polygons.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyogrio.raw
import rasterio
import shapely

from gfm_backend.data.vectorize import vectorize_classes
from gfm_backend.data.vectorize_bands import merge_bands
from gfm_backend.package import default_classes
from gfm_backend.tasks.tiling import Grid, output_profile

CLASSES = default_classes(["water", "forest", "urban"])


def write_raster(path: Path, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    grid = Grid(size, size, "EPSG:32633", rasterio.Affine(1.0, 0, 500_000, 0, -1.0, 5_000_000))
    with rasterio.open(path, "w", **output_profile(grid, "uint8", 255)) as ds:
        for row in range(0, size, 1024):
            rows = min(1024, size - row)
            arr = np.kron(rng.integers(0, 3, (-(-rows // 32), -(-size // 32))),
                          np.ones((32, 32), np.uint8))[:rows, :size].astype(np.uint8)
            noise = rng.random(arr.shape) < 0.002
            arr[noise] = rng.integers(0, 3, int(noise.sum()))
            arr[rng.random(arr.shape) < 0.001] = 255
            ds.write(arr, 1, window=rasterio.windows.Window(0, row, size, rows))


def features(path: Path) -> list[tuple[int, bytes, float]]:
    _, _, wkb, (ids, _, areas) = pyogrio.raw.read(path, layer="polygons")
    geoms = shapely.to_wkb(shapely.normalize(shapely.from_wkb(wkb)))
    return sorted(zip(ids.tolist(), geoms.tolist(), areas.tolist(), strict=True))


def rank_main(tif: Path, out: Path) -> None:
    """One torchrun rank: its band, then (rank 0) the join; rank 0 prints the seconds."""
    import torch.distributed

    from gfm_backend.tasks.classify_ranks import vectorize_ranked
    from gfm_backend.training.distributed import init_distributed, shutdown

    ctx = init_distributed("cpu")
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        parts = vectorize_ranked(ctx, lambda: tif, out.parent / "parts", CLASSES)
        t1, c1 = time.perf_counter(), time.process_time()
        times = [None] * ctx.world
        torch.distributed.all_gather_object(times, round(c1 - c0, 2))
        if ctx.is_main:
            count = merge_bands(tif, out, parts, CLASSES)
            t2, c2 = time.perf_counter(), time.process_time()
            print(json.dumps({"bands_s": t1 - t0, "join_s": t2 - t1, "total_s": t2 - t0,
                              "band_cpu_s": times, "join_cpu_s": c2 - c1, "polygons": count}))
    finally:
        shutdown(ctx)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench-out/vectorize"))
    ap.add_argument("--rank-main", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rank_main:
        return rank_main(*args.rank_main)
    args.out.mkdir(parents=True, exist_ok=True)
    tif = args.out / "classes.tif"
    write_raster(tif, args.size)
    t0, c0 = time.perf_counter(), time.process_time()
    count = vectorize_classes(tif, args.out / "one.gpkg", CLASSES)
    one_s = time.perf_counter() - t0
    print(json.dumps({"ranks": 1, "total_s": one_s, "cpu_s": time.process_time() - c0,
                      "polygons": count,
                      "mpix_s": args.size**2 / one_s / 1e6}))
    (args.out / "ranks").mkdir(exist_ok=True)
    (args.out / "ranks" / "parts").mkdir(exist_ok=True)
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.ranks),
         "--master-addr", "127.0.0.1", "--master-port", "29531", __file__, "--rank-main",
         str(tif), str(args.out / "ranks" / "polygons.gpkg")],
        capture_output=True, text=True, check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    ranked = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps({"ranks": args.ranks, **ranked,
                      "mpix_s": args.size**2 / ranked["total_s"] / 1e6}))
    same = features(args.out / "one.gpkg") == features(args.out / "ranks" / "polygons.gpkg")
    print("same polygons:", same)


if __name__ == "__main__":
    main()
