"""AdamW, weight-decay groups and the warmup + cosine schedule of GFM pretraining.

Matches the official code (mmendiet/GFM, from SimMIM: `optimizer.py`, `lr_scheduler.py`,
`main_teacher.py`, config `simmim_pretrain__swin_base__img192_window6__100ep.yaml`):

- AdamW, betas (0.9, 0.999), eps 1e-8, weight decay 0.05; no decay for 1-D parameters
  (norms, biases), names ending in `.bias`, the mask token (and an absolute position
  embedding), and relative position bias tables. The official code *means* to skip the
  tables, but prefixes the keyword with `encoder.`, which never matches a table's name,
  so its Swin-B run in fact decayed them; pass `skip_keywords=()` to reproduce that.
- LRs scale linearly with the total batch (per-GPU batch x GPUs x accumulation) / 512:
  base 2e-4, warmup start 1e-6 and minimum 1e-5 are ALL scaled (paper: batch 1024 ->
  4e-4, 2e-6, 2e-5).
- Per-iteration schedule = timm's CosineLRScheduler(t_initial=total, warmup_t=warmup,
  warmup_prefix=False, cycle_limit=1), which `WarmupCosineSchedule` runs (`lr_at` is its
  closed form, for reading and tests): a linear warmup from the warmup LR that would
  reach the base LR at `warmup_steps`, but from there on the cosine over the WHOLE run
  (not the part after warmup), so the LR at the end of warmup is the cosine's value
  there (0.976 x base for 10 of 100 epochs), and the minimum from `total_steps` on.
- Gradient-norm clipping at 5.0 (`clip_grad_norm_`, the config's TRAIN.CLIP_GRAD).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

BASE_LR = 2e-4
WARMUP_LR = 1e-6
MIN_LR = 1e-5
REFERENCE_BATCH = 512
WEIGHT_DECAY = 0.05
BETAS = (0.9, 0.999)
EPS = 1e-8
EPOCHS = 100
WARMUP_EPOCHS = 10
GRAD_CLIP_NORM = 5.0
NO_DECAY_NAMES = ("mask_token", "absolute_pos_embed")
NO_DECAY_KEYWORDS = ("relative_position_bias_table",)


# ---------------------------------------------------------------- weight decay groups


def decays(name: str, param: torch.Tensor, skip_keywords: Iterable[str] = NO_DECAY_KEYWORDS) -> bool:
    """Whether a parameter gets weight decay (the official rule, by name and shape)."""
    if param.ndim <= 1 or name.endswith(".bias"):
        return False
    if name.rsplit(".", 1)[-1] in NO_DECAY_NAMES:
        return False
    return not any(keyword in name for keyword in skip_keywords)


def param_groups(
    model: nn.Module,
    weight_decay: float = WEIGHT_DECAY,
    *,
    skip_keywords: Iterable[str] = NO_DECAY_KEYWORDS,
) -> list[dict[str, Any]]:
    """[decay group, no-decay group] of the trainable parameters (frozen teacher left out).

    Each group also carries `names`, kept in the optimizer state for inspection.
    """
    skip_keywords = tuple(skip_keywords)
    groups: dict[bool, dict[str, Any]] = {
        flag: {"params": [], "names": [], "weight_decay": weight_decay if flag else 0.0}
        for flag in (True, False)
    }
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = groups[decays(name, param, skip_keywords)]
        group["params"].append(param)
        group["names"].append(name)
    return [groups[True], groups[False]]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = WEIGHT_DECAY,
    fused: bool | None = None,
    *,
    skip_keywords: Iterable[str] = NO_DECAY_KEYWORDS,
) -> torch.optim.AdamW:
    """AdamW over `param_groups`; `fused=None` fuses when every parameter is on CUDA."""
    groups = param_groups(model, weight_decay, skip_keywords=skip_keywords)
    if fused is None:
        params = [p for g in groups for p in g["params"]]
        fused = bool(params) and all(p.is_cuda for p in params)
    extra = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=lr, betas=BETAS, eps=EPS, weight_decay=weight_decay,
                             **extra)


# ---------------------------------------------------------------- learning rate


class Lrs(NamedTuple):
    base: float
    warmup: float
    minimum: float


def linear_scaled_lrs(
    total_batch: int,
    *,
    accumulation_steps: int = 1,
    base_lr: float = BASE_LR,
    warmup_lr: float = WARMUP_LR,
    min_lr: float = MIN_LR,
) -> Lrs:
    """The official linear scaling: every LR x total batch / 512 (x accumulation steps).

    `total_batch` is the per-step batch summed over all processes (per-GPU x world size).
    """
    factor = total_batch / REFERENCE_BATCH * max(int(accumulation_steps), 1)
    return Lrs(base_lr * factor, warmup_lr * factor, min_lr * factor)


def schedule_steps(epochs: float, warmup_epochs: float, steps_per_epoch: int) -> tuple[int, int]:
    """(total_steps, warmup_steps), truncated to whole steps as the official code does."""
    return int(epochs * steps_per_epoch), int(warmup_epochs * steps_per_epoch)


def lr_at(
    step: int,
    total_steps: int,
    warmup_steps: int,
    base_lr: float,
    warmup_lr: float = WARMUP_LR,
    min_lr: float = MIN_LR,
) -> float:
    """LR of iteration `step` (0-based): timm's cosine schedule as the official run used it."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < warmup_steps:
        return warmup_lr + step * (base_lr - warmup_lr) / warmup_steps
    if step >= total_steps:
        return min_lr
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * step / total_steps))


class WarmupCosineSchedule:
    """timm's `CosineLRScheduler`, set up as the official run used it, stepped per iteration
    and with a resumable position: every group's LR is `lr_at(step)` (x the group's
    `lr_scale`, if any; timm honours it).

    Construction applies step 0; call `step()` after each `optimizer.step()`, so iteration
    g runs at `lr_at(g)` (the official loop runs one step behind this: lr_at(g - 1)).
    `state_dict` / `load_state_dict` restore the position exactly.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        total_steps: int,
        warmup_steps: int,
        base_lr: float,
        warmup_lr: float = WARMUP_LR,
        min_lr: float = MIN_LR,
    ) -> None:
        if not 0 <= warmup_steps <= total_steps or total_steps < 1:
            raise ValueError(f"bad schedule: {warmup_steps} warmup of {total_steps} steps")
        self.optimizer = optimizer
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.base_lr = float(base_lr)
        self.warmup_lr = float(warmup_lr)
        self.min_lr = float(min_lr)
        self.last_step = 0
        self._build()

    def _build(self) -> None:
        from timm.scheduler import CosineLRScheduler

        for group in self.optimizer.param_groups:  # timm starts every group from `initial_lr`
            group["lr"] = group["initial_lr"] = self.base_lr
        self._timm = CosineLRScheduler(
            self.optimizer, t_initial=self.total_steps, lr_min=self.min_lr,
            warmup_lr_init=self.warmup_lr, warmup_t=self.warmup_steps, warmup_prefix=False,
            cycle_limit=1, t_in_epochs=False)
        self._apply()

    def lr(self, step: int | None = None) -> float:
        return lr_at(self.last_step if step is None else step, self.total_steps,
                     self.warmup_steps, self.base_lr, self.warmup_lr, self.min_lr)

    def step(self) -> float:
        """Advance one iteration; returns the LR now set."""
        self.last_step += 1
        return self._apply()

    def _apply(self) -> float:
        self._timm.step_update(self.last_step)
        return float(self._timm._get_lr(self.last_step)[0])

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "base_lr": self.base_lr,
                "warmup_lr": self.warmup_lr, "min_lr": self.min_lr}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.last_step = int(state["last_step"])
        self.total_steps = int(state["total_steps"])
        self.warmup_steps = int(state["warmup_steps"])
        self.base_lr = float(state["base_lr"])
        self.warmup_lr = float(state["warmup_lr"])
        self.min_lr = float(state["min_lr"])
        self._build()
