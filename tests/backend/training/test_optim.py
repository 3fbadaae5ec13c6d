"""Weight-decay groups, LR scaling and the warmup + cosine schedule of GFM pretraining."""

from __future__ import annotations

import math

import pytest
import torch
from timm.scheduler import CosineLRScheduler

from gfm_backend.models import CONFIGS, build_encoder, build_pretrainer
from gfm_backend.models.pretrainer import teacher_config
from gfm_backend.training import (
    GRAD_CLIP_NORM,
    WarmupCosineSchedule,
    build_optimizer,
    linear_scaled_lrs,
    lr_at,
    param_groups,
    schedule_steps,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return build_pretrainer("tiny", teacher=build_encoder(teacher_config(CONFIGS["tiny"])))


def test_no_decay_set(model) -> None:
    decay, no_decay = param_groups(model, 0.05)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.05, 0.0)
    names = decay["names"] + no_decay["names"]
    assert len(names) == len(set(names))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(names) == trainable and not any(n.startswith("teacher.") for n in names)

    params = dict(model.named_parameters())
    expected_no_decay = {
        n for n, p in params.items() if n in trainable and (
            p.ndim == 1 or n == "encoder.mask_token" or n.endswith("relative_position_bias_table"))
    }
    assert set(no_decay["names"]) == expected_no_decay
    assert "encoder.mask_token" in no_decay["names"]
    assert "encoder.layers.2.blocks.1.attn.relative_position_bias_table" in no_decay["names"]
    for name in ("encoder.norm.weight", "encoder.layers.1.downsample.norm.bias",
                 "decoder.0.bias", "projector.bias", "encoder.patch_embed.norm.weight"):
        assert name in no_decay["names"], name
    assert set(decay["names"]) == {n for n in trainable if params[n].ndim > 1} - expected_no_decay
    for name in ("encoder.patch_embed.proj.weight", "encoder.layers.0.blocks.0.attn.qkv.weight",
                 "decoder.0.weight", "projector.weight"):
        assert name in decay["names"], name

    official = param_groups(model, 0.05, skip_keywords=())  # the official run's effective rule
    assert "encoder.layers.0.blocks.0.attn.relative_position_bias_table" in official[0]["names"]


def test_build_optimizer(model) -> None:
    opt = build_optimizer(model, lr=4e-4)
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["betas"] == (0.9, 0.999) and decay["eps"] == 1e-8
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.05, 0.0)
    assert not decay["fused"]  # CPU parameters: not fused unless asked
    assert GRAD_CLIP_NORM == 5.0


def test_linear_scaling_scales_every_lr() -> None:
    assert linear_scaled_lrs(512) == pytest.approx((2e-4, 1e-6, 1e-5))
    paper = linear_scaled_lrs(128 * 8)  # 128 per GPU on 8 GPUs
    assert paper == pytest.approx((4e-4, 2e-6, 2e-5))
    assert linear_scaled_lrs(256, accumulation_steps=4) == pytest.approx((4e-4, 2e-6, 2e-5))
    assert schedule_steps(100, 10, 585) == (58500, 5850)


def test_lr_at_key_steps() -> None:
    total, warmup, base = 1000, 100, 4e-4
    assert lr_at(0, total, warmup, base, 1e-6, 1e-5) == 1e-6
    # the warmup line reaches the base LR at `warmup`; the cosine then runs over the whole
    # run (timm warmup_prefix=False), so step `warmup` sits on the cosine, just below base
    assert lr_at(warmup - 1, total, warmup, base, 1e-6, 1e-5) == pytest.approx(
        1e-6 + (base - 1e-6) * (warmup - 1) / warmup)
    at_warmup = lr_at(warmup, total, warmup, base, 1e-6, 1e-5)
    assert at_warmup == pytest.approx(1e-5 + 0.5 * (base - 1e-5) * (1 + math.cos(math.pi * 0.1)))
    assert lr_at(total // 2, total, warmup, base, 1e-6, 1e-5) == pytest.approx((base + 1e-5) / 2)
    assert lr_at(total, total, warmup, base, 1e-6, 1e-5) == 1e-5
    assert lr_at(total + 50, total, warmup, base, 1e-6, 1e-5) == 1e-5
    assert lr_at(total - 1, total, warmup, base, 1e-6, 1e-5) == pytest.approx(1e-5, rel=1e-3)


def test_lr_at_equals_timm_cosine_as_official() -> None:
    """lr_at(t) is what the official CosineLRScheduler sets after step_update(t)."""
    total, warmup, base = 300, 30, 3e-4
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=base)
    timm_sched = CosineLRScheduler(opt, t_initial=total, lr_min=1e-5, warmup_lr_init=1e-6,
                                   warmup_t=warmup, cycle_limit=1, t_in_epochs=False)
    for t in range(total + 5):
        timm_sched.step_update(t)
        assert opt.param_groups[0]["lr"] == pytest.approx(lr_at(t, total, warmup, base), rel=1e-12)


def test_scheduler_sets_lr_and_resumes_exactly(model) -> None:
    opt = build_optimizer(model, lr=4e-4)
    sched = WarmupCosineSchedule(opt, total_steps=50, warmup_steps=5, base_lr=4e-4)
    assert all(g["lr"] == 1e-6 for g in opt.param_groups)
    for _ in range(12):
        sched.step()
    assert sched.last_step == 12
    assert all(g["lr"] == lr_at(12, 50, 5, 4e-4) for g in opt.param_groups)
    state = sched.state_dict()

    opt2 = build_optimizer(model, lr=1.0)
    resumed = WarmupCosineSchedule(opt2, total_steps=1, warmup_steps=0, base_lr=1.0)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    for _ in range(60):
        assert resumed.step() == sched.step()
    assert opt2.param_groups[0]["lr"] == 1e-5

    opt.param_groups[1]["lr_scale"] = 0.5  # per-group scales (layer decay) are honoured
    sched.load_state_dict(sched.state_dict())  # re-applies the current LR
    assert opt.param_groups[1]["lr"] == 0.5 * opt.param_groups[0]["lr"]
