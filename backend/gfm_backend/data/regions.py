"""Polygons of one class held as outer rings and, apart, their holes; merged across block
seams by unioning outer rings only (holes never cross a seam). Used by `vectorize`."""

from __future__ import annotations

import numpy as np
import shapely

from .pixel_geometry import RingChunk


class Holes:
    """Interior rings in pixel coordinates, packed: int32 vertices and ring lengths.

    Pixel vertices are exact integers, so 8 bytes per vertex hold them exactly, where a
    GEOS ring costs 16 bytes per vertex plus an object per ring.
    """

    __slots__ = ("coords", "lengths")

    def __init__(self, coords: np.ndarray, lengths: np.ndarray) -> None:
        self.coords = coords
        self.lengths = lengths

    @classmethod
    def concat(cls, parts: list[Holes]) -> Holes:
        parts = [h for h in parts if len(h.lengths)]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return NO_HOLES
        return cls(np.concatenate([h.coords for h in parts]),
                   np.concatenate([h.lengths for h in parts]))


NO_HOLES = Holes(np.zeros((0, 2), np.int32), np.zeros(0, np.int64))


class Regions:
    """Polygons of one class held as outer rings and, apart, each one's holes.

    A piece's holes lie strictly inside its own block (a hole touching the block's edge
    would not be enclosed), so no seam crosses them: merging needs only the outer rings,
    and the holes join the region unchanged when it is written. On a noisy map one region
    can hold millions of hole vertices, and a GEOS overlay costs several hundred bytes per
    vertex: unioning whole pieces took 7 GB where the region itself is under 200 MB.
    """

    def __init__(self, shells: np.ndarray, holes: list[Holes]) -> None:
        self.shells = shells  # polygons without holes
        self.holes = holes  # per polygon, its interior rings

    @classmethod
    def split(cls, polygons: np.ndarray) -> Regions:
        if len(polygons) == 0:
            return cls(np.empty(0, dtype=object), [])
        n_rings = shapely.get_num_interior_rings(polygons)
        if not n_rings.any():
            return cls(polygons, [NO_HOLES] * len(polygons))
        _, coords, (ring_off, poly_off) = shapely.to_ragged_array(polygons)
        holes = []
        for i, n in enumerate(n_rings.tolist()):
            if n == 0:
                holes.append(NO_HOLES)
                continue
            rings = ring_off[poly_off[i] : poly_off[i + 1] + 1]
            holes.append(Holes(coords[rings[1] : rings[-1]].astype(np.int32), np.diff(rings[1:])))
        del coords
        return cls(shapely.polygons(shapely.get_exterior_ring(polygons)), holes)

    @classmethod
    def concat(cls, parts: list[Regions]) -> Regions:
        shells = np.concatenate([p.shells for p in parts])
        return cls(shells, [h for p in parts for h in p.holes])

    def take(self, mask: np.ndarray) -> Regions:
        return Regions(self.shells[mask], [h for h, m in zip(self.holes, mask, strict=True) if m])

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat int32 arrays (for `numpy.savez`): pixel vertices are exact integers."""
        n = len(self.shells)
        if n:
            _, coords, (ring_off, _) = shapely.to_ragged_array(self.shells)
        else:
            coords, ring_off = np.zeros((0, 2)), np.zeros(1, np.int64)
        holes = Holes.concat(self.holes)
        return {"shell_coords": coords.astype(np.int32), "shell_offsets": ring_off,
                "hole_coords": holes.coords.astype(np.int32), "hole_lengths": holes.lengths,
                "holes_per_shell": np.array([len(h.lengths) for h in self.holes], np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Regions:
        """The inverse of `to_arrays`: the same vertices, in the same order."""
        ring_off = arrays["shell_offsets"]
        n = len(ring_off) - 1
        shells = shapely.from_ragged_array(
            shapely.GeometryType.POLYGON, arrays["shell_coords"].astype(np.float64),
            (ring_off, np.arange(n + 1)),
        ) if n else np.empty(0, dtype=object)
        lengths, coords = arrays["hole_lengths"], arrays["hole_coords"]
        ring_ends = np.r_[0, np.cumsum(arrays["holes_per_shell"])]
        vertex_ends = np.r_[0, np.cumsum(lengths)]
        holes = [NO_HOLES if r0 == r1 else
                 Holes(coords[vertex_ends[r0] : vertex_ends[r1]], lengths[r0:r1])
                 for r0, r1 in zip(ring_ends[:-1].tolist(), ring_ends[1:].tolist(), strict=True)]
        return cls(np.asarray(shells, dtype=object), holes)

    def assemble(self) -> np.ndarray:
        """The polygons with their holes, as GEOS geometries."""
        out = np.array(self.shells, dtype=object)
        for i, holes in enumerate(self.holes):
            if len(holes.lengths):
                out[i] = _with_holes(out[i], holes)
        return out


def _with_holes(shell: shapely.Polygon, holes: Holes) -> shapely.Polygon:
    outer = shapely.get_coordinates(shell)
    coords = np.concatenate([outer, holes.coords])
    ring_off = np.r_[0, len(outer), len(outer) + np.cumsum(holes.lengths)]
    return shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, coords, (ring_off, [0, len(ring_off) - 1])
    )[0]


def hole_polygons(holes: Holes, chunk: RingChunk) -> np.ndarray:
    """One chunk of holes as polygons of their own (pixel coordinates)."""
    first, last, v0, v1 = chunk
    ring_off = np.r_[0, np.cumsum(holes.lengths[first:last])]
    return shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, holes.coords[v0:v1].astype(np.float64),
        (ring_off, np.arange(last - first + 1)),
    )


def merge_pieces(pieces: Regions) -> Regions:
    """Union pieces that share an edge (not just a corner: 4-connectivity) into regions."""
    shells = pieces.shells
    if len(shells) < 2:
        return pieces
    left, right = shapely.STRtree(shells).query(shells, predicate="touches")
    keep = left < right
    left, right = left[keep], right[keep]
    edge = shapely.relate_pattern(shells[left], shells[right], "F***1****")
    labels = _components(len(shells), left[edge], right[edge])
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    out_shells: list[shapely.Polygon] = []
    out_holes: list[Holes] = []
    for group in np.split(order, bounds):
        if len(group) == 1:
            out_shells.append(shells[group[0]])
            out_holes.append(pieces.holes[group[0]])
            continue
        # tolerance 0 drops the collinear vertices the seams leave on merged edges
        merged = Regions.split(shapely.get_parts(
            shapely.simplify(shapely.union_all(shells[group]), 0, preserve_topology=True)
        ))
        if len(merged.shells) == 1:
            home = np.zeros(len(group), dtype=np.int64)
        else:  # not expected for edge-connected pieces; place holes by their piece's shell
            points = shapely.point_on_surface(shells[group])
            home = np.array([int(np.flatnonzero(shapely.contains(merged.shells, pt))[0])
                             for pt in points])
        for i, shell in enumerate(merged.shells):
            out_shells.append(shell)
            own = [pieces.holes[g] for g, h in zip(group, home, strict=True) if h == i]
            out_holes.append(Holes.concat([merged.holes[i], *own]))
    return Regions(np.array(out_shells, dtype=object), out_holes)


def _components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected-component labels of an undirected graph (min-label propagation)."""
    labels = np.arange(n)
    while True:
        low = np.minimum(labels[left], labels[right])
        new = labels.copy()
        np.minimum.at(new, left, low)
        np.minimum.at(new, right, low)
        new = new[new]  # pointer jumping: converges in a few rounds
        if np.array_equal(new, labels):
            return labels
        labels = new


def keep_large(geoms: np.ndarray, min_px: int) -> np.ndarray:
    """Drop regions under the sieve size that the sieve could not merge (nodata all round)."""
    if min_px <= 1 or len(geoms) == 0:
        return geoms
    return geoms[shapely.area(geoms) >= min_px]
