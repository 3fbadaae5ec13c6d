"""Block masks as SimMIM / GFM draw them: counts, shapes, independence, seeding."""

from __future__ import annotations

import math

import pytest
import torch

from gfm_backend.models.masking import MaskGenerator, upsample_mask


def blocks_of(mask: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, h, w) token mask -> (B, h/scale, w/scale) block mask, checking blocks are whole."""
    b, h, w = mask.shape
    grid = mask.reshape(b, h // scale, scale, w // scale, scale)
    first = grid[:, :, :1, :, :1]
    assert torch.equal(grid, first.expand_as(grid)), "a mask block is not uniform"
    return first[:, :, 0, :, 0]


def test_paper_setting_masks_22_of_36_blocks() -> None:
    gen = MaskGenerator()  # 192 px, 32 px blocks, patch 4, ratio 0.6
    assert (gen.block_count, gen.mask_count, gen.scale, gen.token_grid) == (36, 22, 8, 48)
    masks = gen(16, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (16, 48, 48) and masks.dtype == torch.bool
    counts = blocks_of(masks, 8).flatten(1).sum(1)
    assert counts.tolist() == [22] * 16


def test_rounding_is_the_official_ceil() -> None:
    """np.ceil(count * ratio) on the float product, so 100 * 0.07 = 7.000000000000001 -> 8."""
    assert MaskGenerator(320, 32, 4, 0.07).mask_count == 8
    assert MaskGenerator(224, 32, 4, 0.6).mask_count == math.ceil(49 * 0.6) == 30
    assert MaskGenerator(96, 32, 4, 0.5).mask_count == 5  # 9 blocks: 4.5 -> 5
    assert MaskGenerator(256, 32, 4, 0.0).mask_count == 0
    assert MaskGenerator(256, 32, 4, 1.0).mask_count == 64


def test_samples_are_independent_and_seeded() -> None:
    gen = MaskGenerator()
    a = gen(8, generator=torch.Generator().manual_seed(42))
    b = gen(8, generator=torch.Generator().manual_seed(42))
    c = gen(8, generator=torch.Generator().manual_seed(43))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len({tuple(m.flatten().tolist()) for m in a}) == 8  # every sample its own mask
    single = gen.sample(generator=torch.Generator().manual_seed(1))
    assert single.shape == (48, 48)


def test_every_block_is_equally_likely() -> None:
    gen = MaskGenerator(128, 32, 4, 0.5)  # 16 blocks, 8 masked
    masks = blocks_of(gen(4000, generator=torch.Generator().manual_seed(0)), 8)
    freq = masks.flatten(1).float().mean(0)
    assert torch.all((freq - 0.5).abs() < 0.04), freq


def test_upsample_and_bad_sizes() -> None:
    mask = torch.tensor([[[1, 0], [0, 1]]], dtype=torch.bool)
    pixels = upsample_mask(mask, 4)
    assert pixels.shape == (1, 1, 8, 8) and int(pixels.sum()) == 32
    assert bool(pixels[0, 0, 0, 0]) and not bool(pixels[0, 0, 0, 4])
    with pytest.raises(ValueError):
        MaskGenerator(200, 32, 4, 0.6)
    with pytest.raises(ValueError):
        MaskGenerator(192, 30, 4, 0.6)
    with pytest.raises(ValueError):
        MaskGenerator(192, 32, 4, 1.5)
