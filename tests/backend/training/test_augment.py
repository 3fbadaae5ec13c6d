"""The pretraining augmentation: crop boxes inside the chip, shapes, flips, normalisation."""

from __future__ import annotations

import torch

from gfm_backend.package import IMAGENET_MEAN, IMAGENET_STD
from gfm_backend.training.augment import augment, crop_boxes


def test_crop_boxes_follow_random_resized_crop():
    g = torch.Generator().manual_seed(0)
    boxes = crop_boxes(2000, 256, 256, g, torch.device("cpu"))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 256).all() and (boxes[:, 3] <= 256).all()
    area = w * h / 256**2
    assert area.min() >= 0.6 and area.max() <= 1.0 + 1e-6
    ratio = w / h
    assert ratio.min() >= 0.7 and ratio.max() <= 1.4


def test_augment_shapes_flip_and_normalisation():
    g = torch.Generator().manual_seed(1)
    chips = torch.full((8, 3, 256, 256), 128, dtype=torch.uint8)
    out = augment(chips, 192, g)
    assert out.shape == (8, 3, 192, 192) and out.dtype == torch.float32
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), expected, atol=1e-4, rtol=0)
    ramp = torch.arange(192, dtype=torch.uint8).repeat(32, 3, 192, 1)  # brighter to the right
    flipped = augment(ramp, 192, torch.Generator().manual_seed(2))
    slopes = flipped[:, 0, :, -1].mean(1) - flipped[:, 0, :, 0].mean(1)
    assert (slopes > 0).any() and (slopes < 0).any()  # some flipped, some not
    assert torch.equal(augment(chips, 192, torch.Generator().manual_seed(5)),
                       augment(chips, 192, torch.Generator().manual_seed(5)))
