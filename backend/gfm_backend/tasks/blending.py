"""Seamless stitching of overlapping tile predictions, one strip of rows at a time.

Each tile's probabilities are weighted by a ramp that falls towards the tile border, so
where tiles overlap the centre of a tile wins and no seam shows. Rows that no later tile
can touch are finished and handed to the writer, so memory is a few tile rows, not the
raster.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

FLUSH_ALIGN = 256  # finish rows in multiples of the output GeoTIFF's block height

# sink(top_row, weighted probability sums (C, n, W), weight sums (n, W), valid (n, W))
RowSink = Callable[[int, np.ndarray, np.ndarray, np.ndarray], None]


def blend_weights(size: int, overlap: int) -> np.ndarray:
    """2-D weights: 1 in the middle, a linear ramp over the overlap, never exactly zero."""
    ramp = max(overlap, 1)
    idx = np.arange(size, dtype=np.float32)
    edge = np.minimum(idx, size - 1 - idx) + 1.0
    w1 = np.clip(edge / (ramp + 1.0), 1e-3, 1.0)
    return np.outer(w1, w1).astype(np.float32)


class StripBlender:
    """Accumulates weighted probabilities for a moving band of rows of the output raster."""

    def __init__(self, width: int, height: int, num_classes: int, sink: RowSink) -> None:
        self.width, self.height, self.num_classes = width, height, num_classes
        self.sink = sink
        self.top = 0
        self.acc = np.zeros((num_classes, 0, width), dtype=np.float32)
        self.wsum = np.zeros((0, width), dtype=np.float32)
        self.valid = np.zeros((0, width), dtype=bool)

    def _grow(self, bottom: int) -> None:
        have = self.top + self.wsum.shape[0]
        if bottom <= have:
            return
        extra = bottom - have
        self.acc = np.concatenate(
            [self.acc, np.zeros((self.num_classes, extra, self.width), np.float32)], axis=1
        )
        self.wsum = np.concatenate([self.wsum, np.zeros((extra, self.width), np.float32)])
        self.valid = np.concatenate([self.valid, np.zeros((extra, self.width), bool)])

    def add(
        self, probs: np.ndarray, weight: np.ndarray, valid: np.ndarray, row: int, col: int
    ) -> None:
        """Add one tile (C, h, w) whose top-left pixel is (row, col); parts off-raster drop."""
        h = min(probs.shape[1], self.height - row)
        w = min(probs.shape[2], self.width - col)
        if row < self.top:
            raise ValueError("tile above rows already written")
        self._grow(row + h)
        r = row - self.top
        wt = weight[:h, :w]
        part = probs[:, :h, :w]
        np.multiply(part, wt, out=part)  # the tile's probabilities are ours to overwrite
        self.acc[:, r : r + h, col : col + w] += part
        self.wsum[r : r + h, col : col + w] += wt
        self.valid[r : r + h, col : col + w] |= valid[:h, :w]

    def finish_until(self, row: int, final: bool = False) -> None:
        """Hand rows above `row` to the sink (block-aligned unless `final`)."""
        if not final:
            row = (row // FLUSH_ALIGN) * FLUSH_ALIGN
        n = min(row, self.top + self.wsum.shape[0]) - self.top
        if n <= 0:
            return
        # The finished rows are handed over as they are (no copy): later tiles only touch
        # rows below them, so the sink may resolve them on another thread.
        self.sink(self.top, self.acc[:, :n], self.wsum[:n], self.valid[:n])
        self.acc = self.acc[:, n:]
        self.wsum = self.wsum[n:]
        self.valid = self.valid[n:]
        self.top += n


def resolve_strip(
    acc: np.ndarray, wsum: np.ndarray, valid: np.ndarray, nodata_confidence: float = -1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Blended rows -> class ids (255 where no data) and the winning probability."""
    probs = acc / np.maximum(wsum, 1e-12)
    classes = probs.argmax(axis=0).astype(np.uint8)
    confidence = probs.max(axis=0).astype(np.float32)
    classes[~valid] = 255
    confidence[~valid] = nodata_confidence
    return classes, confidence
