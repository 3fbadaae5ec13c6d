"""The streaming loop's batches: a predictor compiled for one batch size gets full batches
across tile rows, and the map is the one row-by-row batching makes, whatever the tile
counts, rows of nodata, or a batch larger than a row."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from gfm_backend.progress import Progress
from gfm_backend.tasks.tiling import Grid, TileRun, Tiling, stream_tiles

HEIGHT, WIDTH, TILE, OVERLAP, CLASSES = 700, 530, 64, 16, 3


class PixelSoftmax:
    """A per-pixel linear map and softmax: each tile's output is independent of its batch,
    as the compiled network's is; `fixed_batch` as the compiled predictor declares it."""

    def __init__(self, fixed_batch: bool, batch: int) -> None:
        self.fixed_batch, self.batch = fixed_batch, batch
        self.weights = np.random.default_rng(3).standard_normal((CLASSES, 3)).astype(np.float32)
        self.description = "per-pixel softmax"
        self.calls: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        assert len(batch) <= self.batch
        self.calls.append(len(batch))
        logits = (self.weights[None, :, :, None, None] * batch[:, None]).sum(axis=2)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (3, HEIGHT, WIDTH), dtype=np.uint8)
    valid = np.ones((HEIGHT, WIDTH), bool)
    valid[150:400] = False  # rows of nodata spanning several tile rows
    valid[500:, 300:] = False  # and part of some rows
    return pixels, valid


def _stream(image, fixed_batch: bool, batch: int):
    pixels, valid = image
    tiling = Tiling(Grid(WIDTH, HEIGHT, None, rasterio.Affine.identity()), TILE, OVERLAP, TILE)
    predictor = PixelSoftmax(fixed_batch, batch)
    run = TileRun(predictor, lambda raw: raw.astype(np.float32) / 255, CLASSES, batch)
    classes = np.full((HEIGHT, WIDTH), 254, np.uint8)
    confidence = np.zeros((HEIGHT, WIDTH), np.float32)
    strips: list[int] = []

    def sink(top, cls, conf):
        strips.append(cls.shape[0])
        classes[top:top + cls.shape[0]] = cls
        confidence[top:top + cls.shape[0]] = conf

    def read(win):
        r, c = slice(win.row_off, win.row_off + win.height), slice(win.col_off, win.col_off + win.width)
        return pixels[:, r, c], valid[r, c]

    stream_tiles(tiling, read, run, sink, Progress())
    return classes, confidence, predictor.calls, strips


@pytest.mark.parametrize("batch", [3, 8, 32])
def test_batches_across_rows_give_the_row_by_row_map(image, batch):
    by_row, by_row_conf, by_row_calls, by_row_strips = _stream(image, False, batch)
    carried, carried_conf, calls, strips = _stream(image, True, batch)
    assert np.array_equal(carried, by_row) and np.array_equal(carried_conf, by_row_conf)
    assert (carried != 254).all()  # every row was handed to the writer
    assert sum(calls) == sum(by_row_calls)  # the same tiles, no tile twice
    assert len(calls) <= len(by_row_calls)
    # tiles wait one tile row at most: rows are held back by at most one more step
    assert max(strips) <= max(by_row_strips) + (TILE - OVERLAP)

