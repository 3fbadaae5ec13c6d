"""Single process or torchrun: one place that knows rank, world size and device."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..runtime.device import RANK_DEVICE_ENV, resolve_device


@dataclass
class DistContext:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPUs), if any. On GPUs
    a rank takes cuda:LOCAL_RANK, or the device `$GFM_RANK_DEVICE` names (the service's
    ranks run in warm workers where CUDA_VISIBLE_DEVICES can no longer change anything)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device(os.environ.get(RANK_DEVICE_ENV) or f"cuda:{local_rank}")
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistContext(rank, world, local_rank, dev)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_mean(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    """Average a small tensor over ranks (for logging the global loss)."""
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values)
        values /= ctx.world
    return values
