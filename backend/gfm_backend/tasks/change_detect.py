"""Detect changes: a change model over two dates -> change.tif, confidence.tif, polygons.

The result is on BEFORE's grid (its CRS, pixel size and pixel alignment), cut to where
the two dates overlap: AFTER is warped onto that grid window by window (`data.pair`),
and the pair streams through the model tile row by tile row like a classification
(`tiling`), so memory is bounded by the tiles in flight. `change.tif` holds 0 for no
change, then the change classes, 255 where either date has no data; the polygons are the
changed regions only, with their class, area and mean confidence.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import rasterio

from ..data.pair import Pair, open_pair
from ..data.raster import Normalizer, check_bands
from ..data.styles import write_polygons_qml
from ..data.vectorize import vectorize_classes
from ..data.zonal import add_mean_field
from ..outputs import CHANGE, staged_output
from ..package import ModelSpec, read_change_spec
from ..progress import Progress, silent
from ..runtime import Predictor, make_predictor
from .classify import (
    CONFIDENCE_TIF,
    GDAL_CACHE_MB,
    POLYGONS_GPKG,
    REPORT_JSON,
    class_stats,
    finish_rasters,
    inference_spec,
    peak_rss_mb,
    pixel_area_m2,
    tiling_for,
    write_report,
)
from .params import DetectChangeParams
from .tiling import Grid, StripWriter, TileRun, stream_tiles

log = logging.getLogger(__name__)
CHANGE_TIF = "change.tif"
NO_CHANGE = frozenset({0})  # class 0: transparent on the map, no polygons


def detect_change(params: DetectChangeParams, progress: Progress | None = None) -> dict[str, Any]:
    """Run the change-detection job; returns the report also written to report.json."""
    progress = progress or silent()
    t0 = time.perf_counter()
    spec = inference_spec(read_change_spec(params.model), params.model, params.tile_size,
                          params.tile_overlap)
    inputs = {"before": params.before, "after": params.after, "model": params.model}
    with staged_output(params.out, CHANGE, params.overwrite, inputs, last=(REPORT_JSON,)) as stage, \
            rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), \
            open_pair(params.before, params.after, spec.bands, params.after_bands) as pair:
        check_bands(pair.before, spec, params.before)
        t_load = time.perf_counter()
        predictor = make_predictor(params.model, spec, params.runtime, params.device,
                                   params.batch_size, progress,
                                   pixels=int(pair.window.width * pair.window.height))
        load_s = time.perf_counter() - t_load
        log.info("detecting changes %s -> %s with %s", params.before, params.after,
                 predictor.description)
        report = _detect(pair, spec, predictor, params, stage, progress.span(0, 0.9))
        del predictor
        report["timings_s"]["load_model"] = load_s
        report["timings_s"]["cog"] = finish_rasters(stage, CHANGE_TIF, spec.classes, NO_CHANGE)
        report["peak_rss_mb_rasters"] = peak_rss_mb()
        tv = time.perf_counter()
        report["polygon_count"] = _changed_regions(stage, spec, params, progress.span(0.9, 1.0))
        report["timings_s"]["vectorize"] = time.perf_counter() - tv
        report["timings_s"]["total"] = time.perf_counter() - t0
        write_report(report, stage, Path(params.out))
    progress(1.0, "done")
    return report


def _detect(pair: Pair, spec: ModelSpec, predictor: Predictor, params: DetectChangeParams,
            stage: Path, progress: Progress) -> dict[str, Any]:
    before = pair.before
    grid = Grid(int(pair.window.width), int(pair.window.height), before.crs, pair.transform)
    report: dict[str, Any] = {
        "before": str(params.before), "after": str(params.after), "model": str(params.model),
        "task": spec.task, "runtime": params.runtime, "predictor": predictor.description,
        "after_bands": pair.after_bands, "size": [grid.width, grid.height],
        "overlap_window": {"col_off": int(pair.window.col_off), "row_off": int(pair.window.row_off),
                           "width": grid.width, "height": grid.height},
        "crs": before.crs.to_string(), "classes": [asdict(c) for c in spec.classes], "warnings": [],
    }
    tiling = tiling_for(before, spec, report, params.before, grid)
    report.update(tile_size_px=tiling.src_tile, tile_overlap_px=tiling.src_overlap,
                  tiles=len(tiling.rows) * len(tiling.cols))
    writer = StripWriter(grid, spec.classes, stage / CHANGE_TIF, stage / CONFIDENCE_TIF)
    run = TileRun(predictor, Normalizer.from_spec(spec), spec.num_classes, params.batch_size)
    try:
        timer = stream_tiles(tiling, pair.read_overlap, run, writer, progress)
    finally:
        writer.close()
    class_stats(report, spec, writer.counts, pixel_area_m2(before))
    report["timings_s"] = timer.seconds
    return report


def _changed_regions(stage: Path, spec: ModelSpec, params: DetectChangeParams,
                     progress: Progress) -> int:
    """polygons.gpkg of the changed regions (no change is class 0: sieved, never written),
    each with its mean confidence."""
    count = vectorize_classes(stage / CHANGE_TIF, stage / POLYGONS_GPKG, spec.classes,
                              min_area_m2=params.min_area, simplify_tolerance=params.simplify,
                              skip_classes=NO_CHANGE, progress=progress)
    add_mean_field(stage / POLYGONS_GPKG, stage / CONFIDENCE_TIF, "mean_confidence")
    write_polygons_qml(stage / "polygons.qml", spec.classes)
    return count


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """What a job's `outputs` show of a change report (the whole report is report.json)."""
    keys = ("predictor", "size", "crs", "warnings", "polygon_count", "class_pixels",
            "class_area_m2", "timings_s", "after_bands")
    return {"files": report["outputs"]} | {k: report[k] for k in keys if k in report}
