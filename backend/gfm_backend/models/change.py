"""Change detection: one GFM Swin encoder applied to both dates (a Siamese network with
shared weights), the two dates' features fused per stage, decoded by UPerNet.

The GFM paper (Mendieta et al., 2023) evaluates change detection on OSCD (F1 59.82) and
DSIFN (F1 71.24) by passing each date through its Swin encoder and decoding a difference
of the features; its decoder details are in its supplement, which we could not consult.
SeCo (Mañas et al., 2021), the baseline on the same OSCD benchmark, decodes per-stage
absolute differences `|a - b|` with a U-Net. A difference alone is symmetric: it cannot
tell "new building" from "demolished". So each stage here gets both dates' features and
their absolute difference, `[a, b, |a - b|]`, fused by a 1x1 convolution back to the
stage's width, and the same UPerNet head as segmentation (the paper's segmentation head)
decodes the fused pyramid: one decoder to keep right. Binary change is the case of two
classes, `no change` and `change`.

The network takes both dates stacked on the channel axis, `(N, 2 x bands, H, W)`, so the
training loop, the tiling and the predictors treat it like any other network; the
encoder runs once over the batch of `2N` images. The ONNX export has two inputs,
`before` and `after` (`PairInputs`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..package import CHANGE_TASK
from .heads import UPerNetHead, conv_bn_relu, probabilities, upsample_logits
from .swin import SwinEncoder


class ChangeHead(nn.Module):
    """Per stage `[a, b, |a - b|]` -> 1x1 conv, then UPerNet. Its input is the encoder's
    output for the `2N` batch `[before..., after...]`."""

    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 128) -> None:
        super().__init__()
        self.fuse = nn.ModuleList(conv_bn_relu(3 * c, c, 1) for c in in_channels)
        self.decode = UPerNetHead(in_channels, num_classes, channels=channels)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        n = feats[0].shape[0] // 2
        fused = []
        for fuse, f in zip(self.fuse, feats, strict=True):
            a, b = f[:n], f[n:]
            fused.append(fuse(torch.cat([a, b, (a - b).abs()], dim=1)))
        return self.decode(fused)


class ChangeNetwork(nn.Module):
    """Encoder (shared by both dates) + `ChangeHead`; `forward` gives probabilities."""

    def __init__(self, encoder: SwinEncoder, head: ChangeHead, bands: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.bands = bands
        self.task = CHANGE_TASK

    def head_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The head's change logits at stride 4."""
        before, after = x[:, : self.bands], x[:, self.bands :]
        return self.head(self.encoder(torch.cat([before, after], dim=0)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_logits(self.head_logits(x), x.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return probabilities(self.head_logits(x), x.shape[-2:])


class PairInputs(nn.Module):
    """The change network with the two dates as separate inputs (its ONNX signature)."""

    def __init__(self, net: ChangeNetwork) -> None:
        super().__init__()
        self.net = net

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([before, after], dim=1))
