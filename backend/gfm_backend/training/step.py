"""One step of GFM continual pretraining, the same for `gfm pretrain` and `gfm bench pretrain`."""

from __future__ import annotations

import torch

from ..models.masking import MaskGenerator
from .augment import augment
from .optim import GRAD_CLIP_NORM


def train_step(net: torch.nn.Module, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               chips: torch.Tensor, img_size: int, masks: MaskGenerator,
               generator: torch.Generator, bf16: bool) -> dict[str, torch.Tensor]:
    """Augment uint8 chips on the device, mask, forward (bf16 autocast where asked),
    backward, clip the gradient norm and step AdamW. `net` is `model` or its DDP wrapper;
    returns the model's losses (`loss`, `loss_mim`, `loss_distill`)."""
    images = augment(chips, img_size, generator)
    mask = masks(images.shape[0], generator=generator, device=images.device)
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = net(images, mask)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
    optimizer.step()
    return out
