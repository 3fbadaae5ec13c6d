"""Random block masks for masked image modelling, as SimMIM / GFM draw them.

The image is cut into `mask_patch_size` blocks (32 px); exactly
`ceil(blocks * mask_ratio)` of them, chosen uniformly per sample, are masked (22 of
36 at 192 px, ratio 0.6: the official code uses `np.ceil` on the float product). The
mask is returned on the student's patch-token grid (H/4 x W/4 for patch size 4),
1 = masked, which is what `GfmPretrainer.forward` takes.

Sampling is torch-native and batched so masks can be drawn on the GPU next to the
batch; a `torch.Generator` makes it reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MASK_PATCH_SIZE = 32
MASK_RATIO = 0.6


@dataclass(frozen=True)
class MaskGenerator:
    """Draws (B, H/p, W/p) bool masks of whole `mask_patch_size` blocks."""

    input_size: int = 192
    mask_patch_size: int = MASK_PATCH_SIZE
    model_patch_size: int = 4
    mask_ratio: float = MASK_RATIO

    def __post_init__(self) -> None:
        if min(self.input_size, self.mask_patch_size, self.model_patch_size) < 1:
            raise ValueError(f"mask sizes must be positive: {self}")
        if self.input_size % self.mask_patch_size:
            raise ValueError(f"input size {self.input_size} is not a multiple of the "
                             f"mask patch size {self.mask_patch_size}")
        if self.mask_patch_size % self.model_patch_size:
            raise ValueError(f"mask patch size {self.mask_patch_size} is not a multiple of the "
                             f"model patch size {self.model_patch_size}")
        if not 0.0 <= self.mask_ratio <= 1.0:
            raise ValueError(f"mask ratio {self.mask_ratio} is not in [0, 1]")

    @property
    def blocks_per_side(self) -> int:
        return self.input_size // self.mask_patch_size

    @property
    def scale(self) -> int:
        """Patch tokens per mask block side (8 for 32 px blocks and patch 4)."""
        return self.mask_patch_size // self.model_patch_size

    @property
    def block_count(self) -> int:
        return self.blocks_per_side**2

    @property
    def mask_count(self) -> int:
        # float product then ceil, exactly as the official np.ceil(token_count * ratio)
        return math.ceil(self.block_count * self.mask_ratio)

    @property
    def token_grid(self) -> int:
        return self.input_size // self.model_patch_size

    def __call__(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """`batch_size` independent masks, (B, H/p, W/p) bool on `device`.

        A generator must live on `device` (torch's rule for `torch.rand`). Each sample
        takes the `mask_count` smallest of i.i.d. uniform keys: a uniform random subset,
        like the official per-sample `np.random.permutation(n)[:k]`.
        """
        if generator is not None and device is None:
            device = generator.device
        keys = torch.rand(batch_size, self.block_count, generator=generator, device=device)
        chosen = keys.argsort(dim=1)[:, : self.mask_count]
        blocks = torch.zeros(batch_size, self.block_count, dtype=torch.bool, device=keys.device)
        blocks.scatter_(1, chosen, True)
        side = self.blocks_per_side
        blocks = blocks.view(batch_size, side, side)
        return blocks.repeat_interleave(self.scale, 1).repeat_interleave(self.scale, 2)

    def sample(self, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """One (H/p, W/p) mask, for use inside a dataset's transform (CPU)."""
        return self(1, generator=generator)[0]


def upsample_mask(mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, h, w) token mask -> (B, 1, h*p, w*p) pixel mask, as the loss weights pixels."""
    return mask.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2).unsqueeze(1)
