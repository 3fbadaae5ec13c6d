"""Classify over several processes (torchrun, gloo on CPUs): the same class raster and
polygons as one process, and a rank that fails fails the run, leaving nothing finished.
The ranks vectorize in bands: with small blocks, the joined polygons equal one process's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pyogrio
import pytest
import rasterio
import shapely

from gfm_backend.data.synthetic import make_scene, write_scene
from gfm_backend.data.vectorize import vectorize_classes
from gfm_backend.tasks.classify_ranks import row_share
from gfm_backend.tasks.tiling import Grid, Tiling

from ..data.test_vectorize import CLASSES, write_tif
from ..data.test_vectorize_bands import seam_scene

ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(ranks: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
            "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]


def _classify(raster, model, out, ranks: int) -> subprocess.CompletedProcess:
    args = ["-m", "gfm_backend.cli", "--quiet", "classify", str(raster), "--model", str(model),
            "--out", str(out), "--device", "cpu", "--batch-size", "2"]
    launcher = [sys.executable] if ranks == 1 else _torchrun(ranks)
    return subprocess.run(launcher + args, capture_output=True, text=True, timeout=600,
                          env=ONE_THREAD)


def test_shares_cover_every_row_once_with_the_tiles_reaching_in():
    tiling = Tiling(Grid(500, 1000, None, rasterio.Affine.identity()), 192, 48, 192)
    rows = tiling.rows
    for world in (1, 2, 3, 7, len(rows) + 2):
        shares = [row_share(tiling, r, world) for r in range(world)]
        owned = [s for s in shares if not s.empty]
        assert owned[0].top == 0 and owned[-1].bottom == 1000
        assert all(a.bottom == b.top for a, b in zip(owned, owned[1:], strict=False))
        for s in owned:
            assert rows[s.first] + 192 > s.top or s.first == s.start  # reaches in, or none do
            assert s.first == 0 or rows[s.first - 1] + 192 <= s.top  # and no earlier one


def test_two_ranks_give_the_one_process_result_byte_for_byte(tiny_model, tmp_path):
    raster = write_scene(make_scene(size=700, seed=5), tmp_path / "scene.tif")
    single = _classify(raster, tiny_model, tmp_path / "one", 1)
    assert single.returncode == 0, single.stderr[-3000:]
    split = _classify(raster, tiny_model, tmp_path / "two", 2)
    assert split.returncode == 0, split.stderr[-3000:]
    one, two = tmp_path / "one", tmp_path / "two"
    assert (one / "classes.tif").read_bytes() == (two / "classes.tif").read_bytes()
    with rasterio.open(one / "confidence.tif") as a, rasterio.open(two / "confidence.tif") as b:
        assert (a.read(1) == b.read(1)).all()
        assert (a.crs, a.transform) == (b.crs, b.transform)
    polygons = [pyogrio.raw.read(p / "polygons.gpkg", columns=["class_id"]) for p in (one, two)]
    assert [len(p[3][0]) for p in polygons] == [len(polygons[0][3][0])] * 2
    geoms = [sorted(shapely.to_wkt(shapely.normalize(shapely.from_wkb(p[2])), rounding_precision=3))
             for p in polygons]
    assert geoms[0] == geoms[1]
    assert features(one / "polygons.gpkg") == features(two / "polygons.gpkg")
    info = [pyogrio.read_info(p / "polygons.gpkg", layer="polygons") for p in (one, two)]
    assert info[0]["crs"] == info[1]["crs"] and info[1]["geometry_type"] == "Polygon"
    assert sorted(os.listdir(two)) == sorted(os.listdir(one))  # no parts left behind


def damaged_raster(tmp_path) -> Path:
    """512 px with a damaged block at rows 384-512: of two ranks, only the second reads it."""
    raster = tmp_path / "damaged.tif"
    with rasterio.open(write_scene(make_scene(size=512, seed=6), tmp_path / "clean.tif")) as src:
        profile = src.profile | {"tiled": True, "blockxsize": 128, "blockysize": 128,
                                 "compress": "deflate"}
        with rasterio.open(raster, "w", **profile) as dst:
            dst.write(src.read())
    with rasterio.open(raster) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_3", "TIFF", bidx=1))
    with open(raster, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 64)
    return raster


def test_a_rank_that_fails_fails_the_run_and_leaves_nothing_finished(tiny_model, tmp_path):
    """A tile of the raster's lower half is damaged: only the second rank reads it."""
    raster = damaged_raster(tmp_path)
    out = tmp_path / "out"
    run = _classify(raster, tiny_model, out, 2)
    assert run.returncode != 0
    assert "rank 1 of 2 failed" in run.stderr and "damaged.tif: cannot be read at rows" in run.stderr
    ours = [line for line in run.stderr.splitlines() if line.startswith("gfm: ")]
    assert any("rank 1 of 2 failed" in line for line in ours)  # one line, the run's own words
    assert not (out / "classes.tif").exists() and not (out / "report.json").exists()
    alone = _classify(raster, tiny_model, tmp_path / "alone", 1)  # one process: the same words
    assert alone.returncode == 2 and "damaged.tif: cannot be read at rows" in alone.stderr


@pytest.mark.parametrize("world", [2])
def test_more_ranks_than_tile_rows_leave_the_extra_ones_idle(tiny_model, tmp_path, world):
    raster = write_scene(make_scene(size=150, seed=2), tmp_path / "small.tif")
    run = _classify(raster, tiny_model, tmp_path / "out", world)
    assert run.returncode == 0, run.stderr[-3000:]
    with rasterio.open(tmp_path / "out" / "classes.tif") as ds:
        assert ds.shape == (150, 150) and (ds.read(1) != 255).all()


def features(path) -> list[tuple[int, bytes, float]]:
    """Every feature, geometry normalized, as a sorted list: the order differs."""
    _, _, wkb, (ids, _, areas) = pyogrio.raw.read(path, layer="polygons")
    geoms = shapely.to_wkb(shapely.normalize(shapely.from_wkb(wkb)))
    return sorted(zip(ids.tolist(), geoms.tolist(), areas.tolist(), strict=True))


BANDS_MAIN = """
import sys
from pathlib import Path

from gfm_backend.data.vectorize_bands import merge_bands
from gfm_backend.package import default_classes
from gfm_backend.progress import Progress
from gfm_backend.tasks.classify_ranks import vectorize_ranked
from gfm_backend.training.distributed import init_distributed, shutdown

tif, out, failing = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
classes = default_classes(["water", "forest", "urban"])
ctx = init_distributed("cpu")
try:
    progress = Progress(is_cancelled=lambda: ctx.rank == failing)
    parts = vectorize_ranked(ctx, lambda: tif, out.parent / "parts", classes, min_area_m2=1.0,
                             block_size=32, progress=progress)
    if ctx.is_main:
        merge_bands(tif, out, parts, classes, min_area_m2=1.0)
finally:
    shutdown(ctx)
"""


def _vectorize_in_ranks(tmp_path, tif, ranks: int, failing: int = -1):
    script = tmp_path / "bands_main.py"
    script.write_text(BANDS_MAIN, encoding="utf-8")
    (tmp_path / "out" / "parts").mkdir(parents=True, exist_ok=True)
    return subprocess.run([*_torchrun(ranks), str(script), str(tif),
                           str(tmp_path / "out" / "polygons.gpkg"), str(failing)],
                          capture_output=True, text=True, timeout=600, env=ONE_THREAD)


def _seam_raster(tmp_path):
    return write_tif(tmp_path / "classes.tif", seam_scene(size=200, seed=4))


def test_ranks_vectorize_in_bands_and_rank_0_joins_them_as_one_process(tmp_path):
    """Two gloo ranks, 32-px blocks: several block rows a band, a sieve reading across."""
    tif = _seam_raster(tmp_path)
    run = _vectorize_in_ranks(tmp_path, tif, 2)
    assert run.returncode == 0, run.stderr[-3000:]
    vectorize_classes(tif, tmp_path / "one.gpkg", CLASSES, min_area_m2=1.0, block_size=32)
    assert features(tmp_path / "out" / "polygons.gpkg") == features(tmp_path / "one.gpkg")
    assert os.listdir(tmp_path / "out" / "parts") == []  # every part consumed


def test_a_rank_that_fails_vectorizing_fails_every_rank(tmp_path):
    run = _vectorize_in_ranks(tmp_path, _seam_raster(tmp_path), 2, failing=1)
    assert run.returncode != 0
    assert "rank 1 of 2 failed: cancelled by the user" in run.stderr
    assert not (tmp_path / "out" / "polygons.gpkg").exists()
