"""Task heads on top of the four Swin stage outputs.

Segmentation uses UPerNet (Xiao et al. 2018), the head the GFM paper fine-tunes with for
WHU buildings and Vaihingen; scene classification pools the last stage, as the paper's
UC Merced / BigEarthNet setting does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UPerNetHead(nn.Module):
    """Pyramid pooling on the deepest stage plus an FPN over all stages, fused at stride 4."""

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        channels: int = 128,
        pool_scales: tuple[int, ...] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.pool_scales = pool_scales
        self.ppm = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), conv_bn_relu(in_channels[-1], channels, 1))
            for s in pool_scales
        )
        self.ppm_bottleneck = conv_bn_relu(
            in_channels[-1] + len(pool_scales) * channels, channels, 3
        )
        self.lateral = nn.ModuleList(conv_bn_relu(c, channels, 1) for c in in_channels[:-1])
        self.fpn = nn.ModuleList(conv_bn_relu(channels, channels, 3) for _ in in_channels[:-1])
        self.fuse = conv_bn_relu(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def _pyramid_pool(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [x] + [
            F.interpolate(m(x), size=size, mode="bilinear", align_corners=False) for m in self.ppm
        ]
        return self.ppm_bottleneck(torch.cat(pooled, dim=1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral, feats[:-1], strict=True)]
        laterals.append(self._pyramid_pool(feats[-1]))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="bilinear", align_corners=False
            )
        outs = [conv(x) for conv, x in zip(self.fpn, laterals[:-1], strict=True)]
        outs.append(laterals[-1])
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [
            F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outs[1:]
        ]
        return self.classifier(self.dropout(self.fuse(torch.cat(outs, dim=1))))


class SceneHead(nn.Module):
    """Global average pool of the last stage, LayerNorm, linear classifier."""

    def __init__(self, in_channels: list[int], num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_channels[-1])
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels[-1], num_classes)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        pooled = feats[-1].mean(dim=(2, 3))
        return self.fc(self.dropout(self.norm(pooled)))


class ProbeHead(nn.Module):
    """A linear classifier on the frozen features of every stage: the quick fine-tune's
    head, its weights fitted outside the network (logistic regression) and set here.

    Segmentation: the stages' features resized to the first stage's grid (stride 4) and
    concatenated, then one 1x1 conv. A 1x1 conv commutes with bilinear resizing, so each
    stage is classified at its own resolution and the logits are resized and summed: the
    same numbers, without building the 1920-channel stride-4 stack. Scenes: each stage's
    mean, concatenated, then a linear layer.
    """

    def __init__(self, in_channels: list[int], num_classes: int, pooled: bool = False) -> None:
        super().__init__()
        self.in_channels, self.pooled = list(in_channels), pooled
        self.per_stage = nn.ModuleList(nn.Conv2d(c, num_classes, 1, bias=False)
                                       for c in in_channels)
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def set_linear(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """`weight` (classes, sum of the stages' channels), in the features' stage order."""
        with torch.no_grad():
            parts = weight.split(self.in_channels, dim=1)
            for conv, part in zip(self.per_stage, parts, strict=True):
                assert isinstance(conv, nn.Conv2d)
                conv.weight.copy_(part[:, :, None, None])
            self.bias.copy_(bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        if self.pooled:
            out = sum(conv(f.mean(dim=(2, 3), keepdim=True))
                      for conv, f in zip(self.per_stage, feats, strict=True))
            return out.flatten(1) + self.bias
        size = feats[0].shape[-2:]
        out = self.per_stage[0](feats[0])
        for conv, f in zip(self.per_stage[1:], feats[1:], strict=True):
            out = out + F.interpolate(conv(f), size=size, mode="bilinear", align_corners=False)
        return out + self.bias[None, :, None, None]


def stage_features(feats: list[torch.Tensor], pooled: bool = False) -> torch.Tensor:
    """What `ProbeHead` classifies, as one tensor: (N, sum C, H/4, W/4), or (N, sum C)."""
    if pooled:
        return torch.cat([f.mean(dim=(2, 3)) for f in feats], dim=1)
    size = feats[0].shape[-2:]
    return torch.cat([feats[0]] + [F.interpolate(f, size=size, mode="bilinear",
                                                 align_corners=False) for f in feats[1:]], dim=1)


def upsample_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Dense logits (N, C, h, w) resized to the tile's pixels; a scene's (N, C) as they are."""
    if logits.ndim != 4:
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def probabilities(head_logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """What every runtime returns: class probabilities (fp32) at the tile's pixels. The
    compiled runtime compiles the network up to `head_logits` and runs this eagerly: the
    compiled resize and softmax took 1.1 ms a tile on tiny, torch's own kernels 0.2."""
    return torch.softmax(upsample_logits(head_logits.float(), size), dim=1)
