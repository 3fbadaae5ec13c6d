"""When the service runs one classify job over several GPUs, and what each rank is told.

The rule: a job whose type can run as ranks (`classify` with a segmentation model), asking
for device `auto` or `cuda`, that reaches the front of the GPU queue while slots on two or
more devices are free runs as k ranks, one per free device, when its raster has at least
`--split-classify-min-mpix` megapixels (default 16, a raster of 4000 x 4000 px) and
MIN_ROWS_PER_RANK tile rows per rank: k = min(free devices, tile rows // MIN_ROWS_PER_RANK),
and k >= 2. Below that a split gains little: each rank loads the model and runs again the
tile row that reaches into its rows, and rank 0 still assembles and vectorizes alone. A job
that does not split runs as it always has, on one slot.

Each rank runs the task as torchrun would start it (`tasks/classify_ranks.py`), in its
slot's warm worker, with the torch.distributed settings of `rank_env` for that run only.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..runtime.device import RANK_DEVICE_ENV
from .gpu_lanes import ANY_GPU

MIN_ROWS_PER_RANK = 2  # a rank runs the earlier tile row reaching into its rows again


@dataclass(frozen=True)
class Extent:
    """How large a job's raster is, as the task would tile it."""

    mpix: float
    tile_rows: int


def classify_extent(params: dict[str, Any]) -> Extent | None:
    """The raster's megapixels and tile rows at the model's inference tiles; None for a scene
    model (its tiles are few) or when it cannot be worked out now (the job then says why)."""
    try:
        from ..data.raster import open_raster
        from ..package import read_spec
        from ..tasks.classify import inference_spec, tiling_for

        model = Path(params["model"])
        spec = inference_spec(read_spec(model), model, params.get("tile_size"),
                              params.get("tile_overlap"))
        if spec.task != "segmentation":
            return None
        with open_raster(params["raster"]) as ds:
            tiling = tiling_for(ds, spec, {"warnings": []}, Path(params["raster"]))
            return Extent(ds.width * ds.height / 1e6, len(tiling.rows))
    except Exception:  # a scheduling hint only: never the dispatcher's failure
        return None


def may_split(params: dict[str, Any]) -> bool:
    """Only a job that lets the service choose its GPU (`auto`, `cuda`) is shared out."""
    return params.get("device") in ANY_GPU[1:]


def split_ranks(extent: Extent | None, free_devices: int, min_mpix: float) -> int:
    """How many ranks a job runs as (1: not split), by the rule above."""
    if extent is None or extent.mpix < min_mpix:
        return 1
    ranks = min(free_devices, extent.tile_rows // MIN_ROWS_PER_RANK)
    return ranks if ranks >= 2 else 1


def rank_env(rank: int, world: int, port: int, device: int | None) -> dict[str, str]:
    """What torchrun would set for a rank on this machine, and the GPU it computes on
    (its slot's, which need not be cuda:LOCAL_RANK)."""
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
           "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world)}
    if device is not None:
        env[RANK_DEVICE_ENV] = f"cuda:{device}"
    return env


def free_port() -> int:
    """A loopback port free now, for rank 0's rendezvous (torchrun picks one the same way)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
