"""Vectorizing in bands (one per torchrun rank), simulated in one process band after band:
the joined polygons are exactly those of one `vectorize_classes` run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely

from gfm_backend.data.regions import Regions
from gfm_backend.data.vectorize import vectorize_classes
from gfm_backend.data.vectorize_bands import (
    Band,
    band_part,
    bands,
    merge_bands,
    vectorize_band,
)

from .test_vectorize import CLASSES, PX, origin, write_tif

BLOCK = 16


def seam_scene(size: int = 160, seed: int = 0) -> np.ndarray:
    """Regions across every band seam: one spanning all bands with holes, U shapes joined
    only in the band below or above, a ring whose hole straddles a seam, noise and nodata."""
    rng = np.random.default_rng(seed)
    arr = np.zeros((size, size), np.uint8)
    specks = rng.random((size // 4, size // 4)) < 0.3
    arr[1::4, 1::4][specks] = 1  # isolated specks: holes in the background's one region
    arr[20:70, 10:14] = 2  # U: arms down across the seams at rows 48 and 64 ...
    arr[20:70, 30:34] = 2
    arr[66:70, 10:34] = 2  # ... joined only in the band below
    arr[40:90, 50:54] = 1  # upside-down U: joined only at the top
    arr[40:44, 50:80] = 1
    arr[40:90, 76:80] = 1
    arr[56:72, 100:116] = 2  # a ring around a hole that straddles the seam at row 64
    arr[60:68, 104:112] = 0
    arr[:, 140:143] = 2  # a bar through every band
    noise = rng.random(arr.shape) < 0.04
    arr[noise] = rng.integers(0, 3, noise.sum())
    arr[rng.random(arr.shape) < 0.01] = 255
    return arr


def features(path: Path) -> list[tuple[int, str, bytes, float]]:
    """Every feature, geometry normalized: compared as a set (the order differs)."""
    _, _, wkb, (ids, names, areas) = pyogrio.raw.read(path, layer="polygons")
    geoms = shapely.to_wkb(shapely.normalize(shapely.from_wkb(wkb)))
    return sorted(zip(ids.tolist(), names.tolist(), geoms.tolist(), areas.tolist(), strict=True))


def in_bands(src: Path, out: Path, world: int, block: int = BLOCK, **kw) -> int:
    """What the ranks do, one band after another, then rank 0's join."""
    parts = [band_part(out.parent, i, band) for i, band in
             enumerate(bands(rasterio.open(src).height, world, block))]
    for part in parts:
        if not part.band.empty:
            vectorize_band(src, part, CLASSES, block_size=block, **kw)
    return merge_bands(src, out, [p for p in parts if not p.band.empty], CLASSES, **kw)


def test_bands_are_whole_block_rows_covering_the_raster_and_the_first_is_never_empty():
    for height, block, world in [(160, 16, 2), (160, 16, 3), (161, 16, 4), (40, 16, 7),
                                 (700, 2048, 2)]:
        got = bands(height, world, block)
        assert len(got) == world and got[0].top == 0 and not got[0].empty
        assert got[-1].bottom == height
        assert all(a.bottom == b.top for a, b in zip(got, got[1:], strict=False))
        assert all(b.top % block == 0 for b in got if not b.empty)
        rows = [-(-(b.bottom - b.top) // block) for b in got]  # block rows, the last partial
        assert max(rows) - min(rows) <= 1


def test_edge_regions_survive_their_file_vertex_for_vertex():
    polygons = np.array([shapely.Polygon([(0, 0), (9, 0), (9, 9), (0, 9)],
                                         [[(2, 2), (3, 2), (3, 3), (2, 3)],
                                          [(5, 5), (6, 5), (6, 6), (5, 6)]]),
                         shapely.box(20, 20, 21, 23)])
    regions = Regions.split(polygons)
    back = Regions.from_arrays(regions.to_arrays())
    assert shapely.to_wkb(back.assemble()).tolist() == shapely.to_wkb(polygons).tolist()
    assert len(Regions.from_arrays(Regions.split(polygons[:0]).to_arrays()).shells) == 0


@pytest.mark.parametrize("world", [2, 3, 4, 13])
@pytest.mark.parametrize("min_area_m2", [0.0, 1.5])
def test_bands_give_the_one_process_polygons(tmp_path: Path, world: int,
                                             min_area_m2: float) -> None:
    arr = seam_scene()
    src = write_tif(tmp_path / "c.tif", arr)
    one = vectorize_classes(src, tmp_path / "one.gpkg", CLASSES, block_size=BLOCK,
                            min_area_m2=min_area_m2)

    n = in_bands(src, tmp_path / "bands.gpkg", world, min_area_m2=min_area_m2)

    assert n == one == pyogrio.read_info(tmp_path / "bands.gpkg")["features"]
    ours, theirs = features(tmp_path / "bands.gpkg"), features(tmp_path / "one.gpkg")
    assert ours == theirs  # geometries vertex for vertex, classes, names, areas exactly
    background = [shapely.from_wkb(g) for c, _, g, _ in ours if c == 0]
    assert max(shapely.get_num_interior_rings(background)) > 50  # the region with holes ...
    bounds = shapely.bounds(background)
    assert max(bounds[:, 3] - bounds[:, 1]) == 160 * PX  # ... spans every band
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bands.gpkg", "c.tif", "one.gpkg"]
    info = pyogrio.read_info(tmp_path / "bands.gpkg", layer="polygons")
    assert info["crs"] == pyogrio.read_info(tmp_path / "one.gpkg", layer="polygons")["crs"]
    assert info["geometry_type"] == "Polygon"


def test_bands_in_a_geographic_crs_measure_areas_as_one_process(tmp_path: Path) -> None:
    arr = seam_scene(size=96, seed=2)
    src = write_tif(tmp_path / "c.tif", arr, crs="EPSG:4326", transform=origin(12.0, 45.5, 1e-4))
    vectorize_classes(src, tmp_path / "one.gpkg", CLASSES, block_size=BLOCK)

    in_bands(src, tmp_path / "bands.gpkg", 3)

    ours, theirs = features(tmp_path / "bands.gpkg"), features(tmp_path / "one.gpkg")
    assert [f[:3] for f in ours] == [f[:3] for f in theirs]
    assert [f[3] for f in ours] == pytest.approx([f[3] for f in theirs], rel=1e-12)


def test_a_raster_of_one_block_row_is_one_band(tmp_path: Path) -> None:
    src = write_tif(tmp_path / "c.tif", seam_scene(size=40))
    vectorize_classes(src, tmp_path / "one.gpkg", CLASSES)

    in_bands(src, tmp_path / "bands.gpkg", 2, block=2048)

    assert features(tmp_path / "bands.gpkg") == features(tmp_path / "one.gpkg")


def test_a_failed_join_leaves_no_output_and_a_bad_band_is_refused(tmp_path: Path) -> None:
    src = write_tif(tmp_path / "c.tif", seam_scene(size=64))
    parts = [band_part(tmp_path, i, band) for i, band in enumerate(bands(64, 2, BLOCK))]
    vectorize_band(src, parts[0], CLASSES, block_size=BLOCK)  # the second band is missing
    out = tmp_path / "p.gpkg"
    with pytest.raises(FileNotFoundError):
        merge_bands(src, out, parts, CLASSES)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]
    with pytest.raises(ValueError, match="cover"):
        merge_bands(src, out, parts[1:], CLASSES)
    with pytest.raises(ValueError, match="band"):
        vectorize_band(src, band_part(tmp_path, 9, Band(8, 32)), CLASSES, block_size=BLOCK)
