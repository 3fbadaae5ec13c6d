"""Classify over several processes, GPUs or nodes (torchrun): the tile rows are shared out.

Each rank owns a contiguous run of tile rows and the output rows from its first tile row's
top to the next rank's; it also runs the earlier tile rows that reach into its rows, so
every output row is blended from the same tiles, added in the same order, as in a single
process: the class raster comes out identical. Each rank writes its rows as a part (two
GeoTIFF strips in the staging folder). Once every rank has succeeded, the ranks vectorize
the class raster together, each a band of block rows (`data.vectorize_bands`), reading the
parts through a VRT: they need not wait for rank 0 to assemble and convert the rasters
(minutes for a large mosaic, past a collective's timeout). Rank 0 then assembles the parts
into `classes.tif` and `confidence.tif` and finishes as a single process does (COGs,
styles, the report), its polygons step joining the bands' polygons across their seams. A
rank that fails makes every rank fail with its message, and the staging folder goes with
the run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from rasterio.windows import Window

from ..data.raster import Normalizer, check_bands, open_raster, read_window
from ..data.vectorize import BLOCK_SIZE
from ..data.vectorize_bands import BandPart, band_part, bands, merge_bands, vectorize_band
from ..errors import GfmError, InputError
from ..outputs import CLASSIFY, staged_output
from ..package import ClassInfo, ModelSpec, read_spec
from ..progress import Progress
from ..runtime import make_predictor
from .classify import (
    CLASSES_TIF,
    CONFIDENCE_TIF,
    GDAL_CACHE_MB,
    POLYGONS_GPKG,
    REPORT_JSON,
    PolygonsFn,
    base_report,
    class_stats,
    finish_outputs,
    inference_spec,
    pixel_area_m2,
    tiling_for,
)
from .params import ClassifyParams
from .tiling import Grid, StripWriter, TileRun, Tiling, Timer, stream_tiles

log = logging.getLogger(__name__)
PARTS = "parts"
ASSEMBLE_ROWS = 1024  # rows copied from a part at a time


@dataclass(frozen=True)
class RowShare:
    """A rank's tile rows: it runs indices [first, stop) and owns output rows [top, bottom)."""

    first: int
    start: int
    stop: int
    top: int
    bottom: int

    @property
    def empty(self) -> bool:
        return self.bottom <= self.top


def row_share(tiling: Tiling, rank: int, world: int) -> RowShare:
    """Contiguous, near-equal runs of tile rows; the earlier tiles that reach into them."""
    rows, height = tiling.rows, tiling.grid.height
    start, stop = len(rows) * rank // world, len(rows) * (rank + 1) // world
    top = rows[start] if start < len(rows) else height
    bottom = rows[stop] if stop < len(rows) else height
    first = start
    while first > 0 and rows[first - 1] + tiling.src_tile > top:
        first -= 1
    return RowShare(first, start, stop, top, bottom)


def share_grid(grid: Grid, share: RowShare) -> Grid:
    transform = grid.transform * rasterio.Affine.translation(0, share.top)
    return Grid(grid.width, share.bottom - share.top, grid.crs, transform)


class ShareWriter:
    """Keeps only the rows a rank owns (the blender also finishes the rows of the earlier
    tiles it ran) and writes them to the rank's part."""

    def __init__(self, writer: StripWriter, share: RowShare) -> None:
        self.writer, self.share = writer, share

    def __call__(self, top: int, classes: np.ndarray, confidence: np.ndarray) -> None:
        lo = max(self.share.top - top, 0)
        hi = min(self.share.bottom - top, classes.shape[0])
        if hi > lo:
            self.writer(top + lo - self.share.top, classes[lo:hi], confidence[lo:hi])


def part_paths(stage: Path, rank: int) -> tuple[Path, Path]:
    folder = stage / PARTS
    return folder / f"rank{rank}-classes.tif", folder / f"rank{rank}-confidence.tif"


def vrt_path(stage: Path, rank: int) -> Path:
    return stage / PARTS / f"rank{rank}-classes.vrt"


def parts_vrt(stage: Path, shares: list[RowShare], rank: int) -> Path:
    """The class parts as one raster (a VRT of this rank's own, so none waits for another
    to write it): what rank 0 will assemble, pixel for pixel, georeferenced as read back
    from a part, as the assembled file will be."""
    owned = [(r, share) for r, share in enumerate(shares) if not share.empty]
    with rasterio.open(part_paths(stage, owned[0][0])[0]) as first:  # its top is row 0
        crs, transform, width = first.crs, first.transform, first.width
    sources = "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="1">{part_paths(stage, r)[0].name}'
        f'</SourceFilename><SourceBand>1</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{share.bottom - share.top}"/>'
        f'<DstRect xOff="0" yOff="{share.top}" xSize="{width}" '
        f'ySize="{share.bottom - share.top}"/></SimpleSource>' for r, share in owned)
    srs = f"<SRS>{escape(crs.to_wkt())}</SRS>" if crs else ""
    path = vrt_path(stage, rank)
    path.write_text(
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{owned[-1][1].bottom}">{srs}'
        f'<GeoTransform>{", ".join(repr(v) for v in transform.to_gdal())}</GeoTransform>'
        f'<VRTRasterBand dataType="Byte" band="1"><NoDataValue>255</NoDataValue>{sources}'
        f'</VRTRasterBand></VRTDataset>', encoding="utf-8")
    return path


def vectorize_ranked(ctx: Any, source: Callable[[], Path], folder: Path,
                     classes: list[ClassInfo], *, min_area_m2: float = 0.0,
                     simplify_tolerance: float = 0.0, block_size: int = BLOCK_SIZE,
                     progress: Progress | None = None) -> list[BandPart]:
    """Every rank polygonizes its band of the class raster `source()` makes into `folder`;
    return, once every rank has succeeded, the parts for rank 0's `merge_bands`.
    A rank that fails fails every rank (`raise_if_any_failed`)."""
    error: BaseException | None = None
    parts: list[BandPart] = []
    try:
        class_tif = source()
        with rasterio.open(class_tif) as src:
            height = src.height
        parts = [band_part(folder, r, band) for r, band in
                 enumerate(bands(height, ctx.world, block_size))]
        if not parts[ctx.rank].band.empty:
            vectorize_band(class_tif, parts[ctx.rank], classes, min_area_m2=min_area_m2,
                           simplify_tolerance=simplify_tolerance, block_size=block_size,
                           progress=progress)
    except Exception as exc:  # every rank must hear of it, or the others wait forever
        error = exc
    raise_if_any_failed(ctx, error)
    return [part for part in parts if not part.band.empty]


def assemble(stage: Path, shares: list[RowShare], writer: StripWriter) -> None:
    """The parts, in rank order, into the final rasters (through the single-process
    writer, so the files and the class counts are made as they are without ranks).
    The raster parts and their VRTs are removed; the bands' polygons stay for rank 0."""
    for rank, share in enumerate(shares):
        if share.empty:
            continue
        classes_tif, confidence_tif = part_paths(stage, rank)
        with rasterio.open(classes_tif) as cls, rasterio.open(confidence_tif) as conf:
            for row in range(0, cls.height, ASSEMBLE_ROWS):
                win = Window(0, row, cls.width, min(ASSEMBLE_ROWS, cls.height - row))
                writer(share.top + row, cls.read(1, window=win), conf.read(1, window=win))
    writer.close()
    for rank in range(len(shares)):
        for path in (*part_paths(stage, rank), vrt_path(stage, rank)):
            path.unlink(missing_ok=True)


def threads_per_rank() -> int:
    """A CPU's cores shared between the ranks on this machine (torchrun's LOCAL_WORLD_SIZE)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    return max((os.cpu_count() or 1) // max(local, 1), 1)


def raise_if_any_failed(ctx: Any, error: BaseException | None) -> None:
    """Every rank learns whether any failed (and why): all fail together, none hangs.
    The first rank says which failed before any exits (torchrun stops the rest then)."""
    import torch.distributed as dist

    errors: list[Any] = [None] * ctx.world
    dist.all_gather_object(errors, None if error is None else str(error))
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if not failed:
        return
    rank, message = failed[0]
    summary = f"rank {rank} of {ctx.world} failed: {message}"
    if ctx.is_main:
        log.error("%s", summary)
    dist.barrier()
    raise error if error is not None else GfmError(summary)


def classify_ranked(params: ClassifyParams, progress: Progress) -> dict[str, Any]:
    """`classify` under torchrun: rank 0 stages the output folder and tells the others
    where it is; every rank classifies its share; rank 0 finishes."""
    from ..training.distributed import init_distributed, shutdown

    ctx = init_distributed(params.device)
    try:
        if ctx.device.type == "cpu":
            import torch

            torch.set_num_threads(threads_per_rank())
        spec = inference_spec(read_spec(params.model), params.model, params.tile_size,
                              params.tile_overlap)
        if spec.task != "segmentation":
            raise InputError(params.model, "a scene model classifies in one process (its "
                             "tiles are few); run gfm classify without torchrun")
        if not ctx.is_main:
            _ranked(ctx, params, spec, Path(_share_stage(None)), progress.muted())
            _leave_together(ctx)
            return {"rank": ctx.rank, "out": str(params.out)}
        inputs = {"raster": params.raster, "model": params.model}
        with staged_output(params.out, CLASSIFY, params.overwrite, inputs,
                           last=(REPORT_JSON,)) as stage:
            _share_stage(str(stage))
            report = _ranked(ctx, params, spec, stage, progress)
        _leave_together(ctx)
        progress(1.0, "done")
        return report
    finally:
        shutdown(ctx)


FINISH_WAIT = timedelta(days=1)  # rank 0's COGs and polygons of a whole mosaic take hours


def _leave_together(ctx: Any) -> None:
    """On success the other ranks wait for rank 0 to finish before leaving the process
    group: a rank that tore gloo down while rank 0 still used it sometimes aborted as it
    exited (1 run in 3 with bf16 on 2 CPU ranks), failing the whole run after its work was
    done. Not on failure: a rank that fails alone (rank 0 staging the folder, say) while
    the others wait in another collective must exit, so torchrun stops them. gloo only:
    NCCL's barrier runs under the group's own timeout, and no GPU run has shown it."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_backend() == "gloo":
        dist.monitored_barrier(timeout=FINISH_WAIT, wait_all_ranks=True)


def _share_stage(stage: str | None) -> str:
    """Rank 0's staging folder, to every rank."""
    import torch.distributed as dist

    box = [stage]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])


def _ranked(ctx: Any, params: ClassifyParams, spec: ModelSpec, stage: Path,
            progress: Progress) -> dict[str, Any]:
    """This rank's share into its part, then its band of the polygons; on rank 0 the parts
    into the outputs."""
    t0 = time.perf_counter()
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), open_raster(params.raster) as ds:
        check_bands(ds, spec, params.raster)
        predictor = make_predictor(params.model, spec, params.runtime, str(ctx.device),
                                   params.batch_size, progress, pixels=ds.width * ds.height)
        report = base_report(ds, spec, predictor, params)
        tiling = tiling_for(ds, spec, report, params.raster)
        shares = [row_share(tiling, r, ctx.world) for r in range(ctx.world)]
        run = TileRun(predictor, Normalizer.from_spec(spec), spec.num_classes, params.batch_size)
        error: BaseException | None = None
        try:
            timer = _run_share(ds, spec, tiling, run, shares[ctx.rank], stage, ctx.rank,
                               progress.span(0, 0.8))
        except Exception as exc:  # every rank must hear of it, or the others wait forever
            error = exc
        raise_if_any_failed(ctx, error)
        del predictor, run
        tv = time.perf_counter()
        parts = [] if params.no_polygons else vectorize_ranked(
            ctx, lambda: parts_vrt(stage, shares, ctx.rank), stage / PARTS, spec.classes,
            min_area_m2=params.min_area, simplify_tolerance=params.simplify,
            progress=progress.span(0.8, 0.9))
        timings = timer.seconds | ({} if params.no_polygons else
                                   {"vectorize": time.perf_counter() - tv})
        if not ctx.is_main:
            return {}
        ta = time.perf_counter()
        writer = StripWriter(tiling.grid, spec.classes, stage / CLASSES_TIF, stage / CONFIDENCE_TIF)
        assemble(stage, shares, writer)
        class_stats(report, spec, writer.counts, pixel_area_m2(ds))
    if params.no_polygons:
        (stage / PARTS).rmdir()
    report.update(tile_size_px=tiling.src_tile, tile_overlap_px=tiling.src_overlap,
                  tiles=len(tiling.rows) * len(tiling.cols), ranks=ctx.world,
                  timings_s=timings | {"assemble": time.perf_counter() - ta})
    finish_outputs(stage, spec, params, report, progress.span(0.9, 1.0), t0,
                   polygons=_join_bands(stage, spec, params, parts, report))
    return report


def _join_bands(stage: Path, spec: ModelSpec, params: ClassifyParams, parts: list[BandPart],
                report: dict[str, Any]) -> PolygonsFn:
    """The polygons step of rank 0: the bands' parts joined into polygons.gpkg."""

    def join(progress: Progress) -> int:
        tj = time.perf_counter()
        count = merge_bands(stage / CLASSES_TIF, stage / POLYGONS_GPKG, parts, spec.classes,
                            min_area_m2=params.min_area, simplify_tolerance=params.simplify,
                            progress=progress)
        (stage / PARTS).rmdir()
        report["timings_s"]["vectorize_join"] = time.perf_counter() - tj
        return count

    return join


def _run_share(ds: rasterio.DatasetReader, spec: ModelSpec, tiling: Tiling, run: TileRun,
               share: RowShare, stage: Path, rank: int, progress: Progress) -> Any:
    (stage / PARTS).mkdir(exist_ok=True)
    if share.empty:  # more ranks than tile rows
        return Timer()
    classes_tif, confidence_tif = part_paths(stage, rank)
    writer = StripWriter(share_grid(tiling.grid, share), spec.classes, classes_tif, confidence_tif)
    try:
        return stream_tiles(tiling, lambda win: read_window(ds, spec.bands, win), run,
                            ShareWriter(writer, share), progress,
                            run_rows=(share.first, share.stop))
    finally:
        writer.close()
