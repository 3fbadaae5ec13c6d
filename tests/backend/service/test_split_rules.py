"""The rules of a split classify, without processes: when a job splits, what a rank is told,
and what the job becomes from what its ranks ended with."""

from __future__ import annotations

import os

from gfm_backend.service.rank_group import Ending, RankGroup
from gfm_backend.service.split import Extent, classify_extent, may_split, rank_env, split_ranks
from gfm_backend.service.store import CANCELLED, FAILED, SUCCEEDED
from gfm_backend.service.worker import _environment


def test_a_job_splits_when_large_enough_and_several_devices_are_free():
    big = Extent(mpix=20.0, tile_rows=40)
    assert split_ranks(big, free_devices=2, min_mpix=16) == 2
    assert split_ranks(big, free_devices=8, min_mpix=16) == 8
    assert split_ranks(big, free_devices=1, min_mpix=16) == 1
    assert split_ranks(Extent(10.0, 40), free_devices=4, min_mpix=16) == 1  # too small
    assert split_ranks(Extent(20.0, 5), free_devices=4, min_mpix=16) == 2  # 2 tile rows a rank
    assert split_ranks(Extent(20.0, 3), free_devices=4, min_mpix=16) == 1
    assert split_ranks(None, free_devices=4, min_mpix=0) == 1  # size unknown: alone
    assert split_ranks(big, free_devices=4, min_mpix=float("inf")) == 1


def test_only_a_job_that_lets_the_service_pick_its_gpu_splits():
    assert may_split({"device": "auto"}) and may_split({"device": "cuda"})
    assert not may_split({"device": "cuda:1"}) and not may_split({"device": "cpu"})
    assert not may_split({})


def test_a_rank_is_told_what_torchrun_would_say_and_its_slots_gpu():
    env = rank_env(1, 2, 29500, device=3)
    assert env == {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "WORLD_SIZE": "2",
                   "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                   "GFM_RANK_DEVICE": "cuda:3"}
    assert "GFM_RANK_DEVICE" not in rank_env(0, 2, 29500, device=None)


def test_a_rank_env_lasts_for_its_run_only(monkeypatch):
    monkeypatch.setenv("MASTER_PORT", "1234")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with _environment({"MASTER_PORT": "29500", "WORLD_SIZE": "2"}):
        assert os.environ["MASTER_PORT"] == "29500" and os.environ["WORLD_SIZE"] == "2"
    assert os.environ["MASTER_PORT"] == "1234" and "WORLD_SIZE" not in os.environ


def test_the_extent_is_the_classifys_own_tiling(tiny_model, small_raster):
    extent = classify_extent({"model": str(tiny_model), "raster": str(small_raster)})
    assert extent is not None and round(extent.mpix, 4) == round(128 * 128 / 1e6, 4)
    assert extent.tile_rows == 1  # 128 px under one 192 px tile
    assert classify_extent({"model": str(tiny_model), "raster": "/no/such.tif"}) is None


def test_the_job_succeeds_with_rank_zeros_result_once_every_rank_has_ended():
    group = RankGroup("j", 2)
    group.end(1, Ending.DONE, outputs={"rank": 1})
    assert not group.complete
    group.end(0, Ending.DONE, outputs={"files": {}})
    assert group.complete and group.verdict() == (SUCCEEDED, None)
    assert group.outputs == {"files": {}}


def test_a_failing_rank_fails_the_job_in_rank_zeros_words_or_its_own():
    group = RankGroup("j", 2)
    group.end(1, Ending.FAILED, "scene.tif: cannot be read at rows 384-512")
    group.end(0, Ending.FAILED, "rank 1 of 2 failed: scene.tif: cannot be read at rows 384-512")
    assert group.verdict() == (FAILED, "rank 1 of 2 failed: scene.tif: cannot be read at rows 384-512")
    gone = RankGroup("j", 3)
    gone.end(2, Ending.CRASHED, "the job's worker process was killed (SIGKILL)")
    assert gone.lost
    gone.end(0, Ending.KILLED, "stopped")
    gone.end(1, Ending.KILLED, "stopped")
    assert gone.verdict() == (FAILED, "rank 2 of 3 failed: the job's worker process was killed (SIGKILL)")


def test_a_cancel_is_a_cancel_whatever_the_ranks_said():
    group = RankGroup("j", 2, stop_state=CANCELLED)
    group.end(0, Ending.STOPPED, "cancelled by the user")
    group.end(1, Ending.FAILED, "rank 0 of 2 failed: cancelled by the user")
    assert group.verdict() == (CANCELLED, None) and not group.killed
