"""vectorize_classes on real GeoTIFFs: seams, areas, sieve, CRS, atomic output, cancel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
from pyproj import CRS as ProjCRS
from pyproj import Geod
from rasterio.transform import Affine

from gfm_backend.data import gpkg_writer, pixel_geometry
from gfm_backend.data.vectorize import vectorize_classes
from gfm_backend.errors import Cancelled, InputError
from gfm_backend.package import default_classes
from gfm_backend.progress import Progress

CLASSES = default_classes(["water", "forest", "urban"])
UTM = "EPSG:32633"
PX = 0.5  # metres; one pixel is 0.25 m2
ORIGIN = (500_000.0, 5_000_000.0)


def origin(west: float, north: float, size: float) -> Affine:
    return Affine(size, 0.0, west, 0.0, -size, north)


def write_tif(path: Path, arr: np.ndarray, crs: str = UTM,
              transform: Affine | None = None) -> Path:
    transform = transform or origin(*ORIGIN, PX)
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0],
                       count=1, dtype=arr.dtype, nodata=255, crs=crs,
                       transform=transform) as ds:
        ds.write(arr, 1)
    return path


def read(path: Path) -> dict[str, np.ndarray]:
    _, _, wkb, fields = pyogrio.raw.read(path, layer="polygons")
    return {"geom": shapely.from_wkb(wkb), "class_id": fields[0], "class_name": fields[1],
            "area_m2": fields[2]}


def as_set(feats: dict[str, np.ndarray]) -> set[tuple[int, str]]:
    wkt = shapely.to_wkt(shapely.normalize(feats["geom"]), rounding_precision=-1)
    return set(zip(feats["class_id"].tolist(), wkt.tolist(), strict=True))


def test_known_shapes_have_exact_areas_names_and_crs(tmp_path: Path) -> None:
    arr = np.zeros((40, 40), np.uint8)
    arr[5:15, 5:25] = 1  # 10 x 20 px = 50 m2
    arr[20:30, 20:30] = 2  # 10 x 10 px = 25 m2
    src = write_tif(tmp_path / "classes.tif", arr)
    out = tmp_path / "polygons.gpkg"

    n = vectorize_classes(src, out, CLASSES)

    info = pyogrio.read_info(out, layer="polygons")
    assert n == info["features"] == 3
    assert info["geometry_type"] == "Polygon"
    assert list(info["fields"]) == ["class_id", "class_name", "area_m2"]
    assert ProjCRS.from_user_input(info["crs"]) == ProjCRS.from_user_input(UTM)
    feats = read(out)
    by_class = {int(c): (name, a) for c, name, a in
                zip(feats["class_id"], feats["class_name"], feats["area_m2"], strict=True)}
    assert by_class[1] == ("forest", 50.0)
    assert by_class[2] == ("urban", 25.0)
    assert by_class[0] == ("water", 40 * 40 * 0.25 - 75.0)
    rect = feats["geom"][feats["class_id"] == 1][0]
    x0, y0 = ORIGIN
    assert shapely.equals(rect, shapely.box(x0 + 2.5, y0 - 7.5, x0 + 12.5, y0 - 2.5))
    assert shapely.is_valid(feats["geom"]).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif", "polygons.gpkg"]


def test_regions_crossing_block_seams_are_one_feature_each(tmp_path: Path) -> None:
    arr = np.zeros((200, 200), np.uint8)
    arr[10:20, 5:196] = 1  # bar across three vertical seams
    arr[40:71, 20:26] = 2  # U: two arms in the top block row ...
    arr[40:71, 40:46] = 2
    arr[66:71, 20:46] = 2  # ... joined only below the seam at row 64
    arr[120:141, 120:141] = 2  # square over the corner of four blocks
    arr[63, 63] = 1  # two pixels touching only at the four-block corner: two regions
    arr[64, 64] = 1
    src = write_tif(tmp_path / "c.tif", arr)

    n = vectorize_classes(src, tmp_path / "blocked.gpkg", CLASSES, block_size=64)
    whole = vectorize_classes(src, tmp_path / "whole.gpkg", CLASSES, block_size=10_000)

    feats = read(tmp_path / "blocked.gpkg")
    assert n == whole == 6
    assert sorted(feats["class_id"].tolist()) == [0, 1, 1, 1, 2, 2]
    assert as_set(feats) == as_set(read(tmp_path / "whole.gpkg"))
    areas = sorted(feats["area_m2"][feats["class_id"] == 2].tolist())
    assert areas == sorted([(arr[:100] == 2).sum() * 0.25, 21 * 21 * 0.25])
    assert feats["area_m2"][feats["class_id"] == 1].max() == 10 * 191 * 0.25


def test_random_classes_blocked_equal_unblocked(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 3, (200, 200)).astype(np.uint8)
    arr[rng.random(arr.shape) < 0.05] = 255
    src = write_tif(tmp_path / "c.tif", arr)

    n = vectorize_classes(src, tmp_path / "a.gpkg", CLASSES, block_size=64)
    vectorize_classes(src, tmp_path / "b.gpkg", CLASSES, block_size=1000)

    a, b = read(tmp_path / "a.gpkg"), read(tmp_path / "b.gpkg")
    assert n == len(b["geom"])
    assert as_set(a) == as_set(b)
    assert a["area_m2"].sum() == pytest.approx((arr != 255).sum() * 0.25)


def test_region_with_holes_across_seams_is_one_feature_with_every_hole(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    arr = np.zeros((300, 300), np.uint8)
    specks = rng.random((100, 100)) < 0.3
    arr[1::3, 1::3][specks] = 1  # isolated pixels: every one a hole in class 0's one region
    arr[151:159, :] = 2  # a bar across the raster splits class 0 ...
    arr[151:159, 200:202] = 0  # ... except for a bridge, so the two halves stay one region
    src = write_tif(tmp_path / "c.tif", arr)

    n = vectorize_classes(src, tmp_path / "a.gpkg", CLASSES, block_size=64)
    whole = vectorize_classes(src, tmp_path / "b.gpkg", CLASSES, block_size=1000)

    a = read(tmp_path / "a.gpkg")
    assert n == whole
    assert as_set(a) == as_set(read(tmp_path / "b.gpkg"))
    background = a["geom"][a["class_id"] == 0]
    assert len(background) == 1
    assert shapely.get_num_interior_rings(background[0]) == (arr == 1).sum()
    assert a["area_m2"][a["class_id"] == 0][0] == (arr == 0).sum() * 0.25
    assert shapely.is_valid(a["geom"]).all()


@pytest.mark.parametrize("crs", [UTM, "EPSG:4326"])
def test_large_regions_written_ring_by_ring_match_the_whole_polygon(tmp_path: Path, monkeypatch,
                                                                     crs: str) -> None:
    rng = np.random.default_rng(4)
    arr = np.zeros((200, 200), np.uint8)
    arr[1::3, 1::3][rng.random((67, 67)) < 0.4] = 1
    arr[rng.random(arr.shape) < 0.02] = 2
    transform = origin(10.0, 50.0, 1e-5) if crs != UTM else None
    src = write_tif(tmp_path / "c.tif", arr, crs=crs, transform=transform)
    vectorize_classes(src, tmp_path / "whole.gpkg", CLASSES, block_size=64)
    monkeypatch.setattr(gpkg_writer, "LARGE_REGION_VERTICES", 1)  # every region with holes
    monkeypatch.setattr(pixel_geometry, "RING_CHUNK_VERTICES", 50)  # many chunks per region

    vectorize_classes(src, tmp_path / "rings.gpkg", CLASSES, block_size=64)

    def by_wkb(path: Path) -> dict[bytes, tuple[int, float]]:
        _, _, wkb, fields = pyogrio.raw.read(path, layer="polygons")
        return {bytes(w): (int(c), float(a)) for w, c, a in zip(wkb, fields[0], fields[2],
                                                                   strict=True)}

    whole, rings = by_wkb(tmp_path / "whole.gpkg"), by_wkb(tmp_path / "rings.gpkg")
    assert whole.keys() == rings.keys()  # byte for byte the same geometries
    assert max(shapely.get_num_interior_rings(shapely.from_wkb(list(whole)))) > 100
    for key, (cls, area) in whole.items():
        assert rings[key][0] == cls
        assert rings[key][1] == pytest.approx(area, rel=1e-12)


def test_nodata_makes_no_polygons(tmp_path: Path) -> None:
    arr = np.full((50, 50), 255, np.uint8)
    out = tmp_path / "p.gpkg"
    assert vectorize_classes(write_tif(tmp_path / "c.tif", arr), out, CLASSES) == 0
    info = pyogrio.read_info(out, layer="polygons")
    assert info["features"] == 0 and info["geometry_type"] == "Polygon"

    arr[10:20, 10:40] = 1
    arr[15, 15] = 255  # a nodata hole inside a region stays a hole
    vectorize_classes(write_tif(tmp_path / "c.tif", arr), out, CLASSES, block_size=16)
    feats = read(out)
    assert len(feats["geom"]) == 1
    assert feats["area_m2"][0] == (10 * 30 - 1) * 0.25
    assert len(feats["geom"][0].interiors) == 1


def test_min_area_sieve_merges_and_drops_specks(tmp_path: Path) -> None:
    arr = np.zeros((100, 100), np.uint8)
    arr[10, 10:12] = 2  # 2-px speck (0.5 m2) inside water: merged into water
    arr[63:65, 40] = 2  # 2-px speck straddling the seam at row 64
    arr[50:70, 50:70] = 1  # 100 m2 stays
    arr[80:90, 80:90] = 255
    arr[84, 84:86] = 1  # 2-px speck surrounded by nodata: nothing to merge into, dropped
    src = write_tif(tmp_path / "c.tif", arr)
    out = tmp_path / "p.gpkg"

    n = vectorize_classes(src, out, CLASSES, min_area_m2=1.0, block_size=64)

    feats = read(out)
    assert n == 2
    assert sorted(feats["class_id"].tolist()) == [0, 1]
    water = feats["geom"][feats["class_id"] == 0][0]
    assert len(water.interiors) == 2  # the forest square and the nodata patch
    assert feats["area_m2"][feats["class_id"] == 0][0] == (10_000 - 400 - 100) * 0.25
    assert feats["area_m2"][feats["class_id"] == 1][0] == 100.0

    # without the sieve every speck is its own feature
    assert vectorize_classes(src, out, CLASSES, block_size=64) == 5


def test_sieve_in_blocks_agrees_with_whole_raster_sieve(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    arr = np.kron(rng.integers(0, 3, (16, 16)), np.ones((25, 25), np.int64)).astype(np.uint8)
    noise = rng.random(arr.shape) < 0.05
    arr[noise] = rng.integers(0, 3, noise.sum())
    arr[rng.random(arr.shape) < 0.01] = 255
    src = write_tif(tmp_path / "c.tif", arr)

    n = vectorize_classes(src, tmp_path / "a.gpkg", CLASSES, min_area_m2=2.0, block_size=64)
    whole = vectorize_classes(src, tmp_path / "b.gpkg", CLASSES, min_area_m2=2.0,
                              block_size=1000)

    a, b = read(tmp_path / "a.gpkg"), read(tmp_path / "b.gpkg")
    assert abs(n - whole) <= 0.02 * whole
    assert a["area_m2"].min() >= 2.0
    assert a["area_m2"].sum() == b["area_m2"].sum() == (arr != 255).sum() * 0.25
    assert len(as_set(a) ^ as_set(b)) <= 0.05 * whole


def test_geographic_crs_uses_ellipsoidal_area(tmp_path: Path) -> None:
    res = 0.0001  # degrees, about 11 m x 8 m at 45 N
    arr = np.zeros((120, 120), np.uint8)
    arr[20:110, 30:100] = 1
    transform = origin(12.0, 45.5, res)
    src = write_tif(tmp_path / "c.tif", arr, crs="EPSG:4326", transform=transform)
    out = tmp_path / "p.gpkg"

    vectorize_classes(src, out, CLASSES, block_size=50)

    assert ProjCRS.from_user_input(pyogrio.read_info(out)["crs"]).to_epsg() == 4326
    feats = read(out)
    rect = feats["geom"][feats["class_id"] == 1][0]
    assert shapely.equals(rect, shapely.box(12.003, 45.5 - 0.011, 12.01, 45.498))
    # geodesic edges bow off the parallels; dense vertices make pyproj's area converge
    dense = shapely.segmentize(rect, res / 20)
    expected = abs(Geod(ellps="WGS84").geometry_area_perimeter(dense)[0])
    got = feats["area_m2"][feats["class_id"] == 1][0]
    assert got == pytest.approx(expected, rel=1e-6)
    total = abs(Geod(ellps="WGS84").geometry_area_perimeter(
        shapely.segmentize(shapely.box(12.0, 45.488, 12.012, 45.5), res / 20))[0])
    assert feats["area_m2"].sum() == pytest.approx(total, rel=1e-6)


def test_simplify_keeps_valid_polygons_and_pixel_areas(tmp_path: Path) -> None:
    arr = np.zeros((80, 80), np.uint8)
    arr[np.tril_indices(80)] = 1  # staircase diagonal
    src = write_tif(tmp_path / "c.tif", arr)
    plain, simple = tmp_path / "a.gpkg", tmp_path / "b.gpkg"

    vectorize_classes(src, plain, CLASSES, block_size=32)
    vectorize_classes(src, simple, CLASSES, block_size=32, simplify_tolerance=1.0)

    a, b = read(plain), read(simple)
    assert shapely.get_num_coordinates(b["geom"]).sum() < shapely.get_num_coordinates(
        a["geom"]).sum() / 10
    assert shapely.is_valid(b["geom"]).all()
    assert b["area_m2"].tolist() == a["area_m2"].tolist()  # area of the pixels, not the outline


def test_large_raster_union_matches_valid_area(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    arr = np.kron(rng.integers(0, 3, (30, 30)), np.ones((100, 100), np.int64)).astype(np.uint8)
    noise = rng.random(arr.shape) < 0.002
    arr[noise] = rng.integers(0, 3, noise.sum())
    arr[:700, :900] = 255
    src = write_tif(tmp_path / "big.tif", arr)
    out = tmp_path / "big.gpkg"
    fractions: list[float] = []

    n = vectorize_classes(src, out, CLASSES, block_size=512,
                          progress=Progress(report=lambda f, m: fractions.append(f)))

    feats = read(out)
    assert n == len(feats["geom"]) > 100
    valid_m2 = (arr != 255).sum() * 0.25
    assert feats["area_m2"].sum() == pytest.approx(valid_m2, rel=1e-12)
    assert shapely.area(shapely.union_all(feats["geom"])) == pytest.approx(valid_m2, rel=1e-12)
    assert shapely.is_valid(feats["geom"]).all()
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.gpkg", "big.tif"]


def test_cancel_leaves_no_partial_output_and_keeps_old_file(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 3, (256, 256)).astype(np.uint8)
    src = write_tif(tmp_path / "c.tif", arr)
    out = tmp_path / "p.gpkg"
    out.write_bytes(b"previous result")
    progress = Progress()

    def report(fraction: float, message: str) -> None:
        assert message == "vectorizing"
        if fraction > 0.3:
            progress.cancel()

    progress.report = report
    with pytest.raises(Cancelled):
        vectorize_classes(src, out, CLASSES, block_size=32, progress=progress)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tif", "p.gpkg"]
    assert out.read_bytes() == b"previous result"


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        vectorize_classes(tmp_path / "missing.tif", tmp_path / "p.gpkg", CLASSES)
    junk = tmp_path / "junk.tif"
    junk.write_text("not a raster")
    with pytest.raises(InputError, match="junk.tif"):
        vectorize_classes(junk, tmp_path / "p.gpkg", CLASSES)
    floats = write_tif(tmp_path / "f.tif", np.zeros((4, 4), np.float32))
    with pytest.raises(InputError, match="integer"):
        vectorize_classes(floats, tmp_path / "p.gpkg", CLASSES)
    assert not (tmp_path / "p.gpkg").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]
