"""The paper's pretraining augmentation, batched on the training device.

RandomResizedCrop(192, scale 0.67-1, ratio 3/4-4/3) + horizontal flip + ImageNet
normalisation, applied to uint8 chips already on the GPU (or CPU): the loader only
copies bytes, so it never limits the step rate. Crops are resampled with roi_align
(bilinear, 2x2 samples per output pixel, which also smooths downscaling).
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import roi_align

from ..package import IMAGENET_MEAN, IMAGENET_STD

SCALE = (0.67, 1.0)
RATIO = (3 / 4, 4 / 3)
TRIES = 10


def crop_boxes(batch: int, height: int, width: int, generator: torch.Generator,
               device: torch.device) -> torch.Tensor:
    """(B, 4) x0, y0, x1, y1 boxes drawn as torchvision's RandomResizedCrop draws them
    (up to 10 tries per image, then the whole image)."""
    area = height * width
    scale = torch.empty(batch, TRIES, device=device).uniform_(*SCALE, generator=generator)
    log_ratio = torch.empty(batch, TRIES, device=device).uniform_(
        math.log(RATIO[0]), math.log(RATIO[1]), generator=generator)
    ratio = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(area * scale * ratio))
    h = torch.round(torch.sqrt(area * scale / ratio))
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.where(ok.any(dim=1), ok.float().argmax(dim=1), torch.zeros(batch, dtype=torch.long,
                                                                             device=device))
    rows = torch.arange(batch, device=device)
    w = torch.where(ok.any(dim=1), w[rows, first], torch.full((batch,), float(width), device=device))
    h = torch.where(ok.any(dim=1), h[rows, first], torch.full((batch,), float(height), device=device))
    x0 = torch.floor(torch.rand(batch, generator=generator, device=device) * (width - w + 1))
    y0 = torch.floor(torch.rand(batch, generator=generator, device=device) * (height - h + 1))
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def augment(chips: torch.Tensor, out_size: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 (B, 3, S, S) on any device -> normalised float32 (B, 3, out, out)."""
    b, c, h, w = chips.shape
    device = chips.device
    x = chips.float().div_(255.0)
    boxes = crop_boxes(b, h, w, generator, device)
    rois = torch.cat([torch.arange(b, device=device, dtype=x.dtype)[:, None], boxes], dim=1)
    x = roi_align(x, rois, output_size=(out_size, out_size), spatial_scale=1.0,
                  sampling_ratio=2, aligned=True)
    flip = torch.rand(b, generator=generator, device=device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    mean = torch.tensor(IMAGENET_MEAN, device=device, dtype=x.dtype).view(1, c, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device, dtype=x.dtype).view(1, c, 1, 1)
    return (x - mean) / std
