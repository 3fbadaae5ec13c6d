"""Synthetic checkpoints in the published layouts (gfm.pth, Microsoft's ImageNet-22k Swin),
for the loader tests and the weights-manager tests."""

from __future__ import annotations

from pathlib import Path

import torch
from timm.scheduler import CosineLRScheduler

from gfm_backend.models import EncoderConfig

from .swin_reference import ReferenceSwin, reference_for


def yacs_config(config: EncoderConfig):
    """A GFM-style yacs config, as the official training script pickles into gfm.pth."""
    from yacs.config import CfgNode as CN

    cfg = CN()
    cfg.MODEL = CN()
    cfg.MODEL.TYPE = "swin"
    cfg.MODEL.NAME = "gfm_swin_base"
    cfg.MODEL.SWIN = CN()
    cfg.MODEL.SWIN.EMBED_DIM = config.embed_dim
    cfg.MODEL.SWIN.DEPTHS = list(config.depths)
    cfg.MODEL.SWIN.NUM_HEADS = list(config.num_heads)
    cfg.MODEL.SWIN.WINDOW_SIZE = config.window_size
    cfg.DATA = CN()
    cfg.DATA.IMG_SIZE = config.img_size
    cfg.DATA.MASK_PATCH_SIZE = 32
    cfg.DATA.MASK_RATIO = 0.6
    cfg.TRAIN = CN()
    cfg.TRAIN.BASE_LR = 2e-4
    cfg.freeze()
    return cfg


def training_state() -> tuple[dict, dict]:
    """Real AdamW and timm cosine-scheduler state dicts, as the official script saves them."""
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([param], lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05)
    param.grad = torch.ones(3)
    optimizer.step()
    scheduler = CosineLRScheduler(optimizer, t_initial=1000, lr_min=1e-5, warmup_lr_init=1e-6,
                                  warmup_t=100, cycle_limit=1, t_in_epochs=False)
    scheduler.step_update(1)
    return optimizer.state_dict(), scheduler.state_dict()


def write_gfm_checkpoint(
    path: Path, config: EncoderConfig, seed: int = 0
) -> tuple[ReferenceSwin, ReferenceSwin]:
    """A file in the official gfm.pth layout; returns (student, teacher) references."""
    student = reference_for(config, seed)
    teacher = reference_for(config.with_input(224, 7), seed + 1)
    width = config.stage_channels[-1]
    model = {"encoder.mask_token": torch.zeros(1, 1, config.embed_dim)}
    model.update({f"encoder.{k}": v for k, v in student.state_dict().items()})
    model.update({f"teacher.{k}": v for k, v in teacher.state_dict().items()})
    model["decoder.0.weight"] = torch.randn(32 * 32 * 3, width, 1, 1)
    model["decoder.0.bias"] = torch.zeros(32 * 32 * 3)
    model["projector.weight"] = torch.randn(width, width)
    model["projector.bias"] = torch.zeros(width)
    optimizer, scheduler = training_state()
    torch.save({
        "model": model,
        "optimizer": optimizer,
        "lr_scheduler": scheduler,
        "max_accuracy": 0.0,
        "epoch": 99,
        "config": yacs_config(config),
        "amp": {"scale": 65536.0, "_growth_tracker": 0},
    }, path)
    return student, teacher


def write_22k_checkpoint(path: Path, config: EncoderConfig, seed: int = 7) -> ReferenceSwin:
    """Microsoft ImageNet-22k release layout: {'model': {...buffers..., head.*}}."""
    ref = reference_for(config, seed)
    sd = dict(ref.state_dict())
    sd["head.weight"] = torch.randn(11, config.stage_channels[-1])
    sd["head.bias"] = torch.zeros(11)
    torch.save({"model": sd}, path)
    return ref
