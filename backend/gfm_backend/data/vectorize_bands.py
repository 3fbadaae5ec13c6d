"""A class raster's polygons made by several processes at once, one band of block rows each,
then joined into one polygons.gpkg that holds what `vectorize_classes` writes in one process.

Vectorizing is serial block row by block row, and on a 10-gigapixel mosaic it takes longer
than the model does, so the ranks of a torchrun classify share it out:

1. `bands`: the raster's block rows split into near-equal runs, one per rank; band edges
   fall on the single-process vectorizer's block seams, so every block, its sieve (read
   with its margin from the whole raster, across band edges) and its polygons are exactly
   those of one process.
2. `vectorize_band`: each rank runs the single-process loop (`polygonize_rows`) over its
   band and writes every region it sees complete to its own part GeoPackage (areas, CRS
   mapping and simplification run in parallel too). Regions touching the band's top or
   bottom edge may continue in the next band: they go, in pixel coordinates, to a small
   `.npz` file instead (a file, not a collective: the regions of one seam can be large,
   and rank 0 reads them one band at a time).
3. `merge_bands` (rank 0): band by band, the regions open from the bands above and this
   band's edge regions are merged exactly as the loop merges at a block seam
   (`close_regions`); what reaches the band's bottom stays open, the rest is written.
   Rank 0's part becomes the output file (no copy) and the other parts are appended.

Pieces of one region meet in another order than in one process, but the merged outline
does not depend on the order: the union's collinear vertices are all removed (the GEOS of
shapely 2.2's wheels, 3.14, removes even a ring's first one; the tests compare vertices, so
they would catch a GEOS that kept it), so every merged ring holds exactly its corners;
holes never cross a seam and travel unchanged. The features come out in another order only.
With `simplify_tolerance` > 0 a merged outline is simplified from where its ring starts,
which does depend on the order: a few outlines then differ in their simplified vertices
(as they already do between block sizes in one process); areas never differ.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..package import ClassInfo
from ..progress import Progress, silent
from .gpkg_writer import PolygonWriter, append_layer, remove_gpkg
from .regions import Regions
from .vectorize import (
    BLOCK_SIZE,
    check_block_size,
    close_regions,
    open_classes,
    polygon_writer,
    polygonize_rows,
)


@dataclass(frozen=True)
class Band:
    """Rows [top, bottom) of the raster, vectorized by one process."""

    top: int
    bottom: int

    @property
    def empty(self) -> bool:
        return self.bottom <= self.top


@dataclass(frozen=True)
class BandPart:
    """A band and the files its process writes: its complete polygons, its edge regions."""

    band: Band
    gpkg: Path
    edges: Path


def bands(height: int, world: int, block_size: int = BLOCK_SIZE) -> list[Band]:
    """Near-equal runs of whole block rows, one per process; with fewer block rows than
    processes some get none, never the first (it reports the progress)."""
    check_block_size(block_size)
    n = math.ceil(height / block_size)
    first = [-(-n * r // world) for r in range(world + 1)]  # ceil: the first is never empty
    return [Band(min(a * block_size, height), min(b * block_size, height))
            for a, b in zip(first, first[1:], strict=False)]


def band_part(folder: Path, index: int, band: Band) -> BandPart:
    return BandPart(band, folder / f"band{index}-polygons.gpkg", folder / f"band{index}-edges.npz")


def vectorize_band(
    class_tif: Path,
    part: BandPart,
    classes: list[ClassInfo],
    *,
    min_area_m2: float = 0.0,
    simplify_tolerance: float = 0.0,
    nodata: int = 255,
    block_size: int = BLOCK_SIZE,
    skip_classes: frozenset[int] = frozenset(),
    progress: Progress | None = None,
) -> None:
    """One band's complete regions into `part.gpkg`, those on its edges into `part.edges`.

    The arguments are `vectorize_classes`' and must be the same for every band of a raster;
    the band must come from `bands` with this `block_size`.
    """
    progress = progress or silent()
    band = part.band
    check_block_size(block_size)
    if band.empty or band.top % block_size:
        raise ValueError(f"rows {band.top}-{band.bottom} are not a band of {block_size}-px blocks")
    remove_gpkg(part.gpkg)
    with open_classes(Path(class_tif)) as src:
        writer, min_px = polygon_writer(src, part.gpkg, classes, min_area_m2, simplify_tolerance)
        edges = polygonize_rows(src, (band.top, band.bottom), block_size, nodata=nodata,
                                min_px=min_px, writer=writer, progress=progress,
                                skip=skip_classes)
    count = writer.close()
    save_edges(part.edges, edges, count)
    progress(1.0, "vectorizing")


def save_edges(path: Path, edges: dict[int, Regions], count: int) -> None:
    """A band's edge regions per class (exact int32 pixel vertices) and its part's count."""
    arrays: dict[str, Any] = {f"c{cls}_{key}": value for cls, regions in edges.items()
                              for key, value in regions.to_arrays().items()}
    arrays |= {"count": np.int64(count), "classes": np.array(sorted(edges), np.int64)}
    with open(path, "wb") as f:  # a file object: savez would add ".npz" to a bare name
        np.savez(f, **arrays)


def load_edges(path: Path) -> tuple[dict[int, Regions], int]:
    with np.load(path, allow_pickle=False) as z:
        edges = {}
        for cls in z["classes"].tolist():
            prefix = f"c{cls}_"
            edges[cls] = Regions.from_arrays(
                {k[len(prefix):]: z[k] for k in z.files if k.startswith(prefix)})
        return edges, int(z["count"])


def merge_bands(
    class_tif: Path,
    out_gpkg: Path,
    parts: list[BandPart],
    classes: list[ClassInfo],
    *,
    min_area_m2: float = 0.0,
    simplify_tolerance: float = 0.0,
    progress: Progress | None = None,
) -> int:
    """The bands' parts, in order, into `out_gpkg`; return its feature count.

    Regions are joined across the band edges and written as `vectorize_classes` writes them;
    the arguments are those the bands were made with. The part files are consumed.
    `out_gpkg` appears only when complete; on failure no partial output is left behind
    (parts not yet consumed stay, for the caller's staging folder to remove).
    """
    progress = progress or silent()
    out_gpkg = Path(out_gpkg)
    remove_gpkg(out_gpkg, keep_main=True)  # stale -wal/-shm would corrupt the new file
    with atomic_path(out_gpkg, suffix=".gpkg", exists=False) as tmp:
        with open_classes(Path(class_tif)) as src:
            writer, min_px = polygon_writer(src, tmp, classes, min_area_m2, simplify_tolerance)
            height = src.height
        _check_cover(parts, height)
        os.replace(parts[0].gpkg, tmp)  # the first part is the start of the output: no copy
        writer.created = True
        count = _join_edges(parts, height, writer, min_px, progress.span(0, 0.5))
        for i, part in enumerate(parts[1:], start=1):
            progress(0.5 + 0.5 * i / len(parts), JOINING)
            append_layer(part.gpkg, tmp)
            remove_gpkg(part.gpkg)
    progress(1.0, JOINING)
    return count


JOINING = "joining the polygons across bands"


def _join_edges(parts: list[BandPart], height: int, writer: PolygonWriter, min_px: int,
                progress: Progress) -> int:
    """Band by band, the regions open from above with the band's edge regions, merged as at
    a block seam; return the features of all parts, these joined ones included."""
    count = 0
    open_regions: dict[int, Regions] = {}
    for i, part in enumerate(parts):
        progress(i / len(parts), JOINING)
        edges, part_count = load_edges(part.edges)
        count += part_count
        pending = {c: [r] for c, r in open_regions.items()}
        for cls, regions in edges.items():
            pending.setdefault(cls, []).append(regions)
        del edges
        open_regions = close_regions(pending, part.band.bottom, height, writer, min_px)
        part.edges.unlink()
    return count + writer.close()


def _check_cover(parts: list[BandPart], height: int) -> None:
    """The parts' bands must tile the raster's rows in order, top first."""
    if not parts or parts[0].band.top != 0 or parts[-1].band.bottom != height:
        raise ValueError(f"the bands must cover rows 0-{height}")
    for above, below in zip(parts, parts[1:], strict=False):
        if above.band.bottom != below.band.top:
            raise ValueError(f"bands {above.band} and {below.band} do not meet")
