"""Blending: weights, seamless stitching, block-aligned strip output."""

from __future__ import annotations

import numpy as np

from gfm_backend.data.raster import tile_starts
from gfm_backend.tasks.blending import CONFIDENCE_STEPS, StripBlender, blend_weights, resolve_probs


def test_tile_starts_cover_and_end_at_edge():
    assert tile_starts(100, 192, 144) == [0]
    starts = tile_starts(1000, 192, 144)
    assert starts[0] == 0 and starts[-1] == 1000 - 192
    assert all(b - a <= 144 for a, b in zip(starts, starts[1:], strict=False))


def test_weights_peak_in_middle_and_never_zero():
    w = blend_weights(64, 16)
    assert w.min() > 0
    assert w[32, 32] == 1.0
    assert w[0, 0] < w[8, 8] < w[32, 32]


def test_strips_cover_every_row_once_and_blend_exactly():
    height, width, tile, stride = 700, 300, 192, 144
    rows = tile_starts(height, tile, stride)
    cols = tile_starts(width, tile, stride)
    truth = (np.add.outer(np.arange(height), np.arange(width)) // 97 % 3).astype(np.uint8)
    written: list[tuple[int, int]] = []
    out = np.full((height, width), 99, dtype=np.uint8)
    conf = np.zeros((height, width), dtype=np.float32)

    def sink(top, classes, confidence):
        written.append((top, classes.shape[0]))
        out[top : top + classes.shape[0]] = classes
        conf[top : top + classes.shape[0]] = confidence

    blender = StripBlender(width, height, 3, sink, rows=100)  # grows to a tile's height
    weight = blend_weights(tile, tile - stride)
    for i, r in enumerate(rows):
        for c in cols:
            patch = truth[r : r + tile, c : c + tile]
            probs = np.eye(3, dtype=np.float32)[patch].transpose(2, 0, 1)
            valid = np.ones(patch.shape, dtype=bool)
            valid[: max(0, 5 - r), :] = False  # the top five rows are nodata
            blender.add(probs, weight, valid, r, c)
        nxt = rows[i + 1] if i + 1 < len(rows) else height
        blender.finish_until(nxt)
    assert sum(n for _, n in written) == height
    tops = [top for top, _ in written]
    assert tops == sorted(tops) and tops[0] == 0  # in order, each row exactly once
    assert (out[:5] == 255).all() and (conf[:5] == -1).all()
    np.testing.assert_array_equal(out[5:], truth[5:])
    np.testing.assert_allclose(conf[5:], 1.0, rtol=1e-5)


def test_confidence_is_the_winning_probability_to_a_thousandth():
    """Rounded to 1/1024 so the confidence raster compresses; classes are decided first."""
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=(64, 64)).transpose(2, 0, 1).astype(np.float32)
    probs[:, 0, 0] = [0.4999999, 0.5000001, 0, 0]  # rounded first, class 0 would win
    valid = np.ones((64, 64), dtype=bool)
    valid[-1] = False
    classes, confidence = resolve_probs(probs, valid)
    np.testing.assert_array_equal(classes[:-1], probs.argmax(axis=0)[:-1])
    assert classes[0, 0] == 1 and (classes[-1] == 255).all() and (confidence[-1] == -1).all()
    steps = confidence[:-1] * CONFIDENCE_STEPS
    np.testing.assert_array_equal(steps, np.rint(steps))  # exact steps, no float noise
    assert np.abs(confidence[:-1] - probs.max(axis=0)[:-1]).max() <= 0.5 / CONFIDENCE_STEPS
