"""GeoPile builder and reader on real files: GeoTIFFs in two CRSs, PNG, JPEG, a release-style folder."""

from __future__ import annotations

import json
import math
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from gfm_backend.data import geopile_rules
from gfm_backend.data.geopile_build import BuildOptions, build
from gfm_backend.data.geopile_reader import GeoPile, pile_info
from gfm_backend.data.geopile_rules import CutRules
from gfm_backend.errors import InputError

CHIP = 64
SHARD = 8
NODATA_COLS = 150  # b.tif: columns left of this are nodata


def _noise(rng: np.random.Generator, shape: tuple[int, ...], hi: int = 256, dtype=np.uint8) -> np.ndarray:
    return rng.integers(0, hi, shape).astype(dtype)


def make_sources(root: Path) -> Path:
    """Every kind of input the builder must handle, small enough for a quick test."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    (root / "naip").mkdir()
    with rasterio.open(root / "naip" / "a.tif", "w", driver="GTiff", width=300, height=260, count=4,
                       dtype="uint16", crs="EPSG:32633", transform=from_origin(500000, 4e6, 0.6, 0.6)) as d:
        d.write(_noise(rng, (4, 260, 300), 4000, np.uint16))
    rgb = _noise(rng, (3, 200, 200), 255) + 1  # no accidental nodata (0) inside the valid area
    rgb[:, :, :NODATA_COLS] = 0
    with rasterio.open(root / "b.tif", "w", driver="GTiff", width=200, height=200, count=3, dtype="uint8",
                       crs="EPSG:4326", transform=from_origin(10, 50, 1e-5, 1e-5), nodata=0,
                       photometric="RGB") as d:
        d.write(rgb)
    Image.fromarray(_noise(rng, (90, 90, 3))).save(root / "p.png")
    Image.fromarray(_noise(rng, (70, 100, 3))).save(root / "j.jpg", quality=95)
    for cls in ("forest", "river"):  # the GeoPile release layout: dataset/class/image
        (root / "RESISC" / cls).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(_noise(rng, (80, 80, 3))).save(root / "RESISC" / cls / f"{k}.jpg")
    Image.fromarray(np.full((64, 64, 3), 7, np.uint8)).save(root / "blank.png")
    Image.fromarray(_noise(rng, (20, 20, 3))).save(root / "tiny.png")
    (root / "bad.tif").write_bytes(b"II*\x00" + bytes(range(200)))
    (root / "notes.txt").write_text("not imagery")
    (root / "p.png.aux.xml").write_text("<PAMDataset/>")  # a sidecar: silently ignored
    return root


# 25 (a.tif: 5 x 5 windows) + 4 (b.tif: one column of 4 windows survives the nodata rule)
# + p.png + j.jpg (one resized chip each) + 4 release-layout JPEGs
EXPECTED_CHIPS = 35


def build_pile(src: Path, out: Path, workers: int = 1, **rules) -> dict:
    return build(BuildOptions(src=src, out=out, rules=CutRules(chip=CHIP, **rules), shard_chips=SHARD,
                              workers=workers))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("geopile")
    src = make_sources(root / "src")
    summary = build_pile(src, root / "pile", workers=2)
    return src, root / "pile", summary


def test_build_counts_drops_and_reports_bad_files(built):
    src, pile_dir, s = built
    assert s["files_found"] == 11 and s["files_processed"] == 11
    assert s["chips_added"] == s["chips_total"] == EXPECTED_CHIPS
    assert s["dropped"] == {"nodata": 12, "blank": 1, "duplicate": 0}
    problems = {Path(x["file"]).name: x["problem"] for x in s["skipped"]}
    assert set(problems) == {"notes.txt", "bad.tif", "tiny.png"}
    assert "unsupported" in problems["notes.txt"] and "half a chip" in problems["tiny.png"]
    info = pile_info(pile_dir)
    assert info["chips_per_dataset"] == {"RESISC": 4, "naip": 25, "src": 6}
    assert info["chips_per_gsd"] == {"0.3-1 m": 29, "unknown": 6}
    assert info["shards"] == 5 and info["sources"] == {"ok": 9, "failed": 2}
    assert info["bytes"]["shards"] > EXPECTED_CHIPS * 3 * CHIP * CHIP
    assert {Path(f["file"]).name for f in info["failed_files"]} == {"bad.tif", "tiny.png"}


def test_provenance_and_band_rules(built):
    src, pile_dir, _ = built
    pile = GeoPile(pile_dir)
    prov = [pile.provenance(i) for i in range(len(pile))]
    assert [p["i"] for p in prov] == list(range(EXPECTED_CHIPS))
    by_file: dict[str, list[int]] = {}
    for i, p in enumerate(prov):
        by_file.setdefault(Path(p["file"]).name, []).append(i)
    # uint16, 4 bands: the first three, through the stretch recorded with the source
    i = by_file["a.tif"][0]
    p = prov[i]
    assert p["crs"] == "EPSG:32633" and p["gsd_m"] == 0.6 and p["dataset"] == "naip"
    col, row, w, h = p["window"]
    assert p["bounds"] == pytest.approx([500000 + 0.6 * col, 4e6 - 0.6 * (row + h), 500000 + 0.6 * (col + w),
                                         4e6 - 0.6 * row])
    sources = {Path(r["file"]).name: r for r in map(json.loads, (pile_dir / "sources.jsonl").open())}
    rec = sources["a.tif"]
    assert rec["bands"] == [1, 2, 3] and rec["dtype"] == "uint16" and len(rec["stretch"]) == 3
    with rasterio.open(src / "naip" / "a.tif") as ds:
        raw = ds.read([1, 2, 3], window=((row, row + h), (col, col + w))).astype(np.float32)
    st = np.asarray(rec["stretch"], np.float32)
    want = np.clip((raw - st[:, :1, None]) * (255 / (st[:, 1:, None] - st[:, :1, None])), 0, 255) + 0.5
    assert np.abs(pile[i].astype(int) - want.astype(np.uint8)).max() <= 1
    # RGB uint8 with nodata: kept as is, the few nodata pixels zeroed; EPSG:4326 bounds
    for i in by_file["b.tif"]:
        col = prov[i]["window"][0]
        assert prov[i]["crs"] == "EPSG:4326" and prov[i]["bounds"][0] == pytest.approx(10 + col * 1e-5)
        assert col == 136 and (pile[i][:, :, : NODATA_COLS - col] == 0).all()
    # non-georeferenced images: one resized chip, no CRS, bounds or GSD; window = centred square
    for name, window in (("p.png", [0, 0, 90, 90]), ("j.jpg", [15, 0, 70, 70])):
        (i,) = by_file[name]
        assert prov[i]["window"] == window and prov[i]["crs"] is None
        assert prov[i]["bounds"] is None and prov[i]["gsd_m"] is None
    assert {prov[i]["dataset"] for i in by_file["0.jpg"] + by_file["1.jpg"]} == {"RESISC"}


def test_incremental_rebuild_reads_only_new_files(tmp_path, monkeypatch):
    src, pile_dir = make_sources(tmp_path / "src"), tmp_path / "pile"
    assert build_pile(src, pile_dir)["chips_total"] == EXPECTED_CHIPS
    shutil.copy(src / "p.png", src / "p_copy.png")  # a copied file: its chip is a duplicate
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (120, 120, 3), dtype=np.uint8)).save(
        src / "RESISC" / "river" / "new.png")
    full = {p.name: p.stat().st_mtime_ns for p in sorted((pile_dir / "shards").iterdir())[:-1]}
    opened: list[str] = []
    real_cut = geopile_rules.cut_part
    monkeypatch.setattr(geopile_rules, "cut_part", lambda t, r: opened.append(t.file.name) or real_cut(t, r))

    s = build_pile(src, pile_dir)
    assert sorted(opened) == ["new.png", "p_copy.png"]
    assert s["files_processed"] == 2 and s["files_unchanged"] == 11
    assert s["chips_added"] == 1 and s["dropped"]["duplicate"] == 1
    assert s["chips_total"] == EXPECTED_CHIPS + 1
    assert [x["file"] for x in s["skipped"]] == [str(src / "notes.txt")]  # bad files are not retried
    # full shards are never rewritten; the short last one was topped up
    assert {n: (pile_dir / "shards" / n).stat().st_mtime_ns for n in full} == full
    pile = GeoPile(pile_dir)
    assert len(pile) == EXPECTED_CHIPS + 1 and pile.provenance(EXPECTED_CHIPS)["file"].endswith("new.png")
    assert pile_info(pile_dir)["chips_per_dataset"]["RESISC"] == 5

    opened.clear()
    changed = np.random.default_rng(6).integers(0, 256, (90, 90, 3), dtype=np.uint8)
    Image.fromarray(changed).save(src / "p.png")
    s = build_pile(src, pile_dir)
    assert opened == ["p.png"] and s["chips_added"] == 1  # a changed file is read again


def test_same_pile_whatever_the_worker_count_and_work_split(built, tmp_path):
    src, pile_dir, _ = built
    build_pile(src, tmp_path / "one", workers=1, part_chips=4)  # a.tif read in 5 parts of one row
    a, b = GeoPile(pile_dir), GeoPile(tmp_path / "one")
    assert len(a) == len(b)
    assert np.array_equal(a.get_batch(range(len(a))), b.get_batch(range(len(b))))


def test_interrupted_build_leftovers_are_discarded(built, tmp_path):
    src, pile0, _ = built
    pile_dir = tmp_path / "pile"
    shutil.copytree(pile0, pile_dir)
    with open(pile_dir / "chips.jsonl", "a") as f:
        f.write('{"i": 999, "half a li')
    (pile_dir / "shards" / "000099.npy").write_bytes(b"junk")
    assert len(GeoPile(pile_dir)) == EXPECTED_CHIPS  # readers ignore what was never committed
    s = build_pile(src, pile_dir)
    assert s["files_processed"] == 0 and s["chips_total"] == EXPECTED_CHIPS
    assert not (pile_dir / "shards" / "000099.npy").exists()
    pile = GeoPile(pile_dir)
    assert pile.provenance(len(pile) - 1)["i"] == EXPECTED_CHIPS - 1


def test_wrong_chip_size_and_foreign_folder_are_refused(built, tmp_path):
    src, pile_dir, _ = built
    with pytest.raises(InputError, match="64 px chips"):
        build(BuildOptions(src=src, out=pile_dir, rules=CutRules(chip=96)))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.docx").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        build_pile(src, tmp_path / "docs")
    with pytest.raises(InputError, match="does not exist"):
        build_pile(tmp_path / "nowhere", tmp_path / "p")


def test_reader_random_access(built):
    pile = GeoPile(built[1])
    assert len(pile) == EXPECTED_CHIPS and pile.chip_size == CHIP
    chip = pile[10]
    assert chip.shape == (3, CHIP, CHIP) and chip.dtype == np.uint8 and chip.flags.writeable
    assert np.array_equal(pile[-1], pile[len(pile) - 1])
    batch = pile.get_batch([10, 0, 34, 10])
    assert batch.shape == (4, 3, CHIP, CHIP)
    assert np.array_equal(batch[0], chip) and np.array_equal(batch[2], pile[34])
    with pytest.raises(IndexError):
        pile[len(pile)]
    clone = pickle.loads(pickle.dumps(pile))  # DataLoader workers: maps are not pickled
    assert len(pickle.dumps(pile)) < 10_000 and np.array_equal(clone[10], chip)


def test_rank_subsets_shuffle_and_resume(built):
    pile = GeoPile(built[1])
    n = len(pile)
    r0, r1 = pile.rank_indices(0, 2, epoch=1, seed=7), pile.rank_indices(1, 2, epoch=1, seed=7)
    assert not set(r0) & set(r1) and sorted(np.concatenate([r0, r1])) == list(range(n))
    assert np.array_equal(r0, pile.rank_indices(0, 2, epoch=1, seed=7))  # deterministic
    assert not np.array_equal(pile.epoch_order(1, 7), pile.epoch_order(2, 7))  # reshuffled per epoch
    assert not np.array_equal(pile.epoch_order(1, 7), pile.epoch_order(1, 8))
    steps = pile.steps_per_epoch(4, world=2)
    b0 = list(pile.batches(4, rank=0, world=2, epoch=1, seed=7))
    b1 = list(pile.batches(4, rank=1, world=2, epoch=1, seed=7, prefetch=2))
    assert len(b0) == len(b1) == steps == (n // 2) // 4  # ranks step together
    seen = np.concatenate([b.indices for b in b0 + b1])
    assert len(set(seen)) == len(seen)
    assert all(np.array_equal(b.images, pile.get_batch(b.indices)) for b in b1)
    epoch, step = b0[2].next_position
    resumed = list(pile.batches(4, rank=0, world=2, epoch=epoch, seed=7, start=step))
    assert [b.step for b in resumed] == [b.step for b in b0[3:]]
    assert all(np.array_equal(x.indices, y.indices) for x, y in zip(resumed, b0[3:], strict=True))
    with pytest.raises(ValueError):
        pile.rank_indices(2, 2, 0)


def test_missing_or_empty_pile_names_the_folder(tmp_path):
    with pytest.raises(InputError) as err:
        GeoPile(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "readme.txt").write_text("no imagery here")
    s = build_pile(tmp_path / "src", tmp_path / "empty")
    assert s["chips_total"] == 0 and len(s["skipped"]) == 1
    with pytest.raises(InputError, match="no chips") as err:
        GeoPile(tmp_path / "empty")
    assert err.value.path == str(tmp_path / "empty")


def test_read_throughput(tmp_path):
    """Prints chips/s for random 192 px batches (a figure for the README, not an assertion)."""
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(1)
    with rasterio.open(src / "big.tif", "w", driver="GTiff", width=1024, height=1024, count=3,
                       dtype="uint8", crs="EPSG:32633", transform=from_origin(500000, 4e6, 0.5, 0.5)) as d:
        d.write(_noise(rng, (3, 1024, 1024)))
    build(BuildOptions(src=src, out=tmp_path / "pile", rules=CutRules(chip=192), shard_chips=16))
    pile = GeoPile(tmp_path / "pile")
    assert len(pile) == 36
    out = np.empty((32, 3, 192, 192), np.uint8)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.5:
        pile.get_batch(rng.integers(0, len(pile), 32), out=out)
        n += 32
    print(f"\nGeoPile read: {n / (time.perf_counter() - t0):,.0f} chips/s (192 px, random batches of 32; "
          "a 36-chip pile, so from CPU caches: see the README for a larger pile)")


def test_formats_and_band_rules(tmp_path):
    """COG, JPEG 2000, VRT, palette and RGBA PNG, float32 single band: each read by its rule."""
    rng = np.random.default_rng(3)
    src, elsewhere = tmp_path / "src", tmp_path / "elsewhere"
    src.mkdir()
    elsewhere.mkdir()
    geo = {"crs": "EPSG:3857", "transform": from_origin(1e6, 6e6, 2.0, 2.0)}
    with rasterio.open(src / "cog.tif", "w", driver="COG", width=96, height=96, count=3, dtype="uint8",
                       **geo) as d:
        d.write(_noise(rng, (3, 96, 96)))
    with rasterio.open(src / "s2.jp2", "w", driver="JP2OpenJPEG", width=96, height=96, count=3,
                       dtype="uint16", QUALITY=100, REVERSIBLE="YES", **geo) as d:
        d.write(_noise(rng, (3, 96, 96), 3000, np.uint16))
    with rasterio.open(elsewhere / "base.tif", "w", driver="GTiff", width=96, height=96, count=1,
                       dtype="uint8", **geo) as d:
        d.write(_noise(rng, (1, 96, 96)))
    (src / "mosaic.vrt").write_text(
        '<VRTDataset rasterXSize="96" rasterYSize="96"><SRS>EPSG:3857</SRS>'
        "<GeoTransform>1000000, 2, 0, 6000000, 0, -2</GeoTransform>"
        '<VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{elsewhere / "base.tif"}</SourceFilename>'
        "<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>")
    pal = Image.fromarray(rng.integers(0, 4, (96, 96), dtype=np.uint8), mode="P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255] + [0] * 756)
    pal.save(src / "palette.png")
    rgba = np.concatenate([_noise(rng, (96, 96, 3)), np.full((96, 96, 1), 255, np.uint8)], axis=2)
    rgba[:, :60, 3] = 0  # transparent left part: most of the chip is invalid
    Image.fromarray(rgba, mode="RGBA").save(src / "rgba.png")
    with rasterio.open(src / "dem.tif", "w", driver="GTiff", width=96, height=96, count=1,
                       dtype="float32", **geo) as d:
        d.write(rng.normal(300, 50, (1, 96, 96)).astype(np.float32))

    s = build(BuildOptions(src=src, out=tmp_path / "pile", rules=CutRules(chip=CHIP)))
    assert s["skipped"] == [] and s["chips_added"] == 5 and s["dropped"]["nodata"] == 1
    records = {Path(r["file"]).name: r for r in map(json.loads, (tmp_path / "pile" / "sources.jsonl").open())}
    assert {n: r["rule"] for n, r in records.items()} == {
        "cog.tif": "first three bands", "s2.jp2": "first three bands", "mosaic.vrt": "grey",
        "palette.png": "colour table", "rgba.png": "red, green, blue", "dem.tif": "grey"}
    assert records["s2.jp2"]["stretch"] and records["dem.tif"]["stretch"]
    assert records["cog.tif"]["stretch"] is None
    assert records["rgba.png"]["dropped"]["nodata"] == 1
    # 2 Web Mercator units at latitude ~47.4 degrees are 1.355 m on the ground
    lat = math.degrees(2 * math.atan(math.exp((6e6 - 96) / 6_378_137)) - math.pi / 2)
    assert records["cog.tif"]["gsd_m"] == pytest.approx(2.0 * math.cos(math.radians(lat)), rel=2e-3)
    pile = GeoPile(tmp_path / "pile")
    chips = {Path(pile.provenance(i)["file"]).name: pile[i] for i in range(len(pile))}
    colours = {tuple(c) for c in chips["palette.png"].reshape(3, -1).T}
    assert colours <= {(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)}
    assert np.array_equal(chips["mosaic.vrt"][0], chips["mosaic.vrt"][2])


def test_nan_pixels_are_nodata_in_chips(tmp_path):
    """NaN (no nodata declared) is nodata: a chip that is mostly NaN is dropped, never kept
    as a black square."""
    rng = np.random.default_rng(5)
    src = tmp_path / "src"
    src.mkdir()
    data = rng.normal(300, 50, (3, 2 * CHIP, 4 * CHIP)).astype(np.float32)
    data[:, :, : 2 * CHIP] = np.nan  # the left four chips are all NaN
    with rasterio.open(src / "nan.tif", "w", driver="GTiff", width=4 * CHIP, height=2 * CHIP, count=3,
                       dtype="float32", crs="EPSG:3857", transform=from_origin(1e6, 6e6, 2.0, 2.0)) as d:
        d.write(data)
    s = build(BuildOptions(src=src, out=tmp_path / "pile", rules=CutRules(chip=CHIP)))
    assert s["chips_added"] == 4 and s["dropped"]["nodata"] == 4, s
