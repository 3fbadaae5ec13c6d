"""Pixel-space geometry to the raster's CRS, and ISO WKB written a chunk of rings at a time
(for regions too large to build whole in GEOS). Pixel vertices are exact integers; one
formula maps them, so vertices shared by neighbouring regions stay identical."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import numpy as np
import shapely
from affine import Affine

if TYPE_CHECKING:
    from .regions import Holes


RING_CHUNK_VERTICES = 1 << 20  # holes converted and encoded at a time


RingChunk = tuple[int, int, int, int]  # first ring, end ring, first vertex, end vertex


def to_crs(pix: np.ndarray, t: Affine) -> np.ndarray:
    """Pixel (col, row) coordinates -> CRS coordinates; one formula, so shared vertices match."""
    return shapely.transform(pix, lambda xy: transform_in_place(xy, t))


def transform_in_place(xy: np.ndarray, t: Affine) -> np.ndarray:
    """t * (col, row), computed as t.a * x + t.b * y + t.c, in place: no copy of the vertices."""
    x = xy[:, 0].copy() if t.d else None
    xy[:, 0] *= t.a
    if t.b:
        xy[:, 0] += t.b * xy[:, 1]
    xy[:, 0] += t.c
    xy[:, 1] *= t.e
    if x is not None:
        xy[:, 1] += t.d * x
    xy[:, 1] += t.f
    return xy


def ring_chunks(lengths: np.ndarray) -> list[RingChunk]:
    """Split rings into runs of about RING_CHUNK_VERTICES vertices: (first ring, end ring,
    first vertex, end vertex) each."""
    ends = np.r_[0, np.cumsum(lengths)]
    cuts = np.searchsorted(ends[1:], np.arange(RING_CHUNK_VERTICES, int(ends[-1]),
                                               RING_CHUNK_VERTICES))
    bounds = np.unique(np.r_[0, cuts + 1, len(lengths)].clip(0, len(lengths)))
    return [(int(a), int(b), int(ends[a]), int(ends[b]))
            for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def polygon_wkb(shell: shapely.Polygon, holes: Holes, chunks: list[RingChunk],
                 t: Affine) -> bytes:
    """ISO WKB (little-endian, 2D) of shell + holes in CRS coordinates, a chunk of rings at a
    time: byte for byte what shapely.to_wkb gives for the whole polygon."""
    outer = transform_in_place(shapely.get_coordinates(shell), t).astype("<f8", copy=False)
    parts = [struct.pack("<BII", 1, 3, 1 + len(holes.lengths)),
             struct.pack("<I", len(outer)), outer.tobytes()]
    for first, last, v0, v1 in chunks:
        xy = transform_in_place(holes.coords[v0:v1].astype("<f8"), t)
        buf = bytearray()
        prev = 0
        for n in holes.lengths[first:last].tolist():
            buf += struct.pack("<I", n)
            buf += xy[prev : prev + n].tobytes()
            prev += n
        parts.append(bytes(buf))
        del buf, xy
    return b"".join(parts)
