"""`gfm geopile build|info` through its parser and task functions: cancel, resume, lock, options."""

from __future__ import annotations

import argparse
import fcntl
import os

import numpy as np
import pytest

from gfm_backend.data.geopile_reader import GeoPile
from gfm_backend.errors import Cancelled, GfmError
from gfm_backend.progress import Progress
from gfm_backend.tasks.geopile import GeopileParams, build_geopile, geopile_info
from gfm_backend.tasks.geopile_cli import add_geopile, run_geopile
from tests.backend.data.test_geopile import EXPECTED_CHIPS, make_sources


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gfm")
    add_geopile(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return make_sources(tmp_path_factory.mktemp("geopile-task") / "src")


def test_cli_build_then_info(src, tmp_path):
    out = tmp_path / "pile"
    seen: list[float] = []
    s = run_geopile(parse("geopile", "build", str(src), "--out", str(out), "--chip", "64", "--shard-chips",
                          "8", "--workers", "2"), Progress(report=lambda f, m: seen.append(f)))
    assert s["chips_total"] == EXPECTED_CHIPS and s["info"]["chips"] == EXPECTED_CHIPS
    assert seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
    info = run_geopile(parse("geopile", "info", str(out)), Progress())
    assert info == geopile_info(out) and info["chips_per_dataset"]["naip"] == 25


def test_band_choice_and_dataset_name(src, tmp_path):
    s = build_geopile(GeopileParams(str(src / "naip"), str(tmp_path / "p"), chip=64, bands=[4, 3, 2],
                                    dataset="NAIP-2020"))
    assert s["info"]["chips_per_dataset"] == {"NAIP-2020": 25}
    pile = GeoPile(tmp_path / "p")
    assert pile.provenance(0)["dataset"] == "NAIP-2020"
    grey = build_geopile(GeopileParams(src / "naip", tmp_path / "g", chip=64, bands=[4]))
    assert grey["chips_total"] == 25
    chip = GeoPile(tmp_path / "g")[0]
    assert np.array_equal(chip[0], chip[1]) and np.array_equal(chip[1], chip[2])  # one band -> grey


def test_cancel_keeps_committed_work_and_the_next_build_completes(src, tmp_path):
    calls = [0]

    def cancel_after_a_few() -> bool:
        calls[0] += 1
        return calls[0] > 8

    out = tmp_path / "pile"
    params = GeopileParams(src, out, chip=64, shard_chips=8, workers=1)
    with pytest.raises(Cancelled):
        build_geopile(params, Progress(is_cancelled=cancel_after_a_few))
    partial = len(GeoPile(out))
    assert 0 < partial < EXPECTED_CHIPS
    s = build_geopile(params)
    assert 0 < s["files_processed"] < 11 and s["chips_total"] == EXPECTED_CHIPS
    pile = GeoPile(out)
    digests = {pile[i].tobytes() for i in range(len(pile))}
    assert len(digests) == EXPECTED_CHIPS  # nothing duplicated by the restart


def test_bad_options_and_a_second_writer_are_refused(src, tmp_path):
    with pytest.raises(GfmError, match="--chip"):
        GeopileParams(src, tmp_path / "p", chip=8)
    with pytest.raises(GfmError, match="--bands"):
        GeopileParams(src, tmp_path / "p", bands=[1, 2])
    with pytest.raises(GfmError, match="--min-valid"):
        GeopileParams(src, tmp_path / "p", min_valid=0)
    out = tmp_path / "locked"
    out.mkdir()
    fd = os.open(out / ".lock", os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(GfmError, match="another"):
            build_geopile(GeopileParams(src, out, chip=64))
    finally:
        os.close(fd)
