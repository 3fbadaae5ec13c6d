"""Classify layer: a model package over a raster of any size -> classes, confidence, polygons.

Streams the raster tile row by tile row: tiles are read (one row ahead, in a thread),
normalised as `model.json` says, run through the model in batches, blended on
probabilities and written in finished strips. Outputs are staged and renamed at the end.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio.windows import Window

from ..data.areas import PixelAreas
from ..data.cog import to_cog
from ..data.grid import write_tile_grid
from ..data.raster import (
    Normalizer,
    check_bands,
    open_raster,
    read_window,
    source_scale,
)
from ..data.styles import (
    colormap,
    write_category_names,
    write_confidence_qml,
    write_polygons_qml,
    write_raster_qml,
)
from ..data.vectorize import vectorize_classes
from ..errors import InputError
from ..outputs import CLASSIFY, staged_output
from ..package import ClassInfo, ModelSpec, read_spec
from ..progress import Progress, silent
from ..runtime import Predictor, make_predictor
from .blending import round_confidence
from .params import ClassifyParams
from .tiling import (
    CONFIDENCE_NODATA,
    Grid,
    StripWriter,
    TileRun,
    Tiling,
    Timer,
    output_profile,
    stream_tiles,
)

log = logging.getLogger(__name__)

CLASSES_TIF, CONFIDENCE_TIF = "classes.tif", "confidence.tif"
POLYGONS_GPKG, REPORT_JSON = "polygons.gpkg", "report.json"
GDAL_CACHE_MB = 128


def peak_rss_mb() -> float:
    """This process's peak resident memory so far. Linux's VmHWM belongs to the address
    space, so a process started by a big one reports its own peak (`ru_maxrss` survives
    exec and would report the parent's); elsewhere `ru_maxrss` (KiB, macOS bytes)."""
    import resource
    import sys

    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def classify(params: ClassifyParams, progress: Progress | None = None) -> dict[str, Any]:
    """Run the classification job; returns the report also written to report.json."""
    progress = progress or silent()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: share the rows
        from .classify_ranks import classify_ranked

        return classify_ranked(params, progress)
    t0 = time.perf_counter()
    spec = inference_spec(read_spec(params.model), params.model, params.tile_size,
                          params.tile_overlap)
    inputs = {"raster": params.raster, "model": params.model}
    # GDAL's block cache defaults to 5 % of RAM; our access is a single streaming pass,
    # so a small cache keeps memory flat whatever the raster's size.
    with staged_output(params.out, CLASSIFY, params.overwrite, inputs, last=(REPORT_JSON,)) as stage, \
            rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), open_raster(params.raster) as ds:
        check_bands(ds, spec, params.raster)
        t_load = time.perf_counter()
        predictor = make_predictor(params.model, spec, params.runtime, params.device,
                                   params.batch_size, progress, pixels=ds.width * ds.height)
        load_s = time.perf_counter() - t_load
        log.info("classifying %s with %s", params.raster, predictor.description)
        if spec.task == "segmentation":
            report = _segment(ds, spec, predictor, params, stage, progress.span(0, 0.9))
        else:
            report = _classify_scenes(ds, spec, predictor, params, stage, progress.span(0, 0.9))
        del predictor  # the network's memory is free for vectorizing
        report["timings_s"]["load_model"] = load_s
        finish_outputs(stage, spec, params, report, progress.span(0.9, 1.0), t0)
    progress(1.0, "done")
    return report


PolygonsFn = Callable[[Progress], int]  # writes the stage's polygons.gpkg, returns its count


def finish_outputs(stage: Path, spec: ModelSpec, params: ClassifyParams, report: dict[str, Any],
                   progress: Progress, t0: float, polygons: PolygonsFn | None = None) -> None:
    """From the finished rasters: COGs and styles, the polygons, report.json.

    `polygons` makes polygons.gpkg (default: vectorize the class raster); its seconds add
    to any `vectorize` time already in the report (the ranks' bands under torchrun)."""
    report["timings_s"]["cog"] = finish_rasters(stage, CLASSES_TIF, spec.classes)
    report["peak_rss_mb_rasters"] = peak_rss_mb()  # before vectorizing
    if spec.task == "segmentation" and not params.no_polygons:
        tv = time.perf_counter()
        write = polygons or (lambda p: vectorize_classes(
            stage / CLASSES_TIF, stage / POLYGONS_GPKG, spec.classes,
            min_area_m2=params.min_area, simplify_tolerance=params.simplify, progress=p))
        report["polygon_count"] = write(progress)
        report["timings_s"]["vectorize"] = (report["timings_s"].get("vectorize", 0.0)
                                            + time.perf_counter() - tv)
    if (stage / POLYGONS_GPKG).exists():
        write_polygons_qml(stage / "polygons.qml", spec.classes)
    report["timings_s"]["total"] = time.perf_counter() - t0
    write_report(report, stage, Path(params.out))


def inference_spec(spec: ModelSpec, model: Path, tile: int | None,
                   overlap: int | None) -> ModelSpec:
    """The package's spec at the tiles to run (asked, else its inference tiles)."""
    try:
        return spec.for_inference(tile, overlap)
    except ValueError as exc:
        raise InputError(model, f"cannot run these tiles: {exc}") from exc


def finish_rasters(stage: Path, classes_tif: str, classes: list[ClassInfo],
                   see_through: frozenset[int] = frozenset()) -> float:
    """Class and confidence rasters as COGs with class names and QGIS styles; seconds taken."""
    tc = time.perf_counter()
    # the two at once: each conversion's reading and overviews run on one core
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = [pool.submit(to_cog, stage / classes_tif, "mode"),
                pool.submit(to_cog, stage / CONFIDENCE_TIF, "average")]
        for job in jobs:
            job.result()
    write_category_names(stage / classes_tif, classes)
    write_raster_qml(stage / Path(classes_tif).with_suffix(".qml").name, classes,
                     see_through=see_through)
    write_confidence_qml(stage / "confidence.qml")
    return time.perf_counter() - tc


def write_report(report: dict[str, Any], stage: Path, out: Path) -> None:
    """report.json, listing every output by its final path: the last file written."""
    report["peak_rss_mb"] = peak_rss_mb()
    report["outputs"] = {p.name: str(out / p.name) for p in sorted(stage.iterdir())}
    report["outputs"][REPORT_JSON] = str(out / REPORT_JSON)
    (stage / REPORT_JSON).write_text(json.dumps(report, indent=2), encoding="utf-8")


SUMMARY_KEYS = ("predictor", "size", "crs", "warnings", "polygon_count", "class_pixels",
                "class_area_m2", "timings_s", "peak_rss_mb")


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """What a job's `outputs` show of a classify report (the whole report is report.json);
    a rank other than the first of a torchrun classify reports only itself."""
    if "outputs" not in report:
        return dict(report)
    return {"files": report["outputs"]} | {k: report[k] for k in SUMMARY_KEYS if k in report}


def base_report(ds: rasterio.DatasetReader, spec: ModelSpec, predictor: Predictor,
                 params: ClassifyParams) -> dict[str, Any]:
    return {
        "raster": str(params.raster), "model": str(params.model), "task": spec.task,
        "runtime": params.runtime, "predictor": predictor.description,
        "size": [ds.width, ds.height], "crs": ds.crs.to_string() if ds.crs else None,
        "classes": [asdict(c) for c in spec.classes], "warnings": [],
    }


def source_tile(ds: rasterio.DatasetReader, spec: ModelSpec, report: dict[str, Any],
                path: Path) -> tuple[float, int]:
    """Raster pixels per model pixel and the tile size in raster pixels (warns on resampling)."""
    ratio, warning = source_scale(ds, spec)
    if warning:
        log.warning("%s: %s", path, warning)
        report["warnings"].append(warning)
    return ratio, max(int(round(spec.tile_size * ratio)), 8)


def class_stats(report: dict[str, Any], spec: ModelSpec, counts: np.ndarray,
                 pixel_area_m2: float | None) -> None:
    report["class_pixels"] = {c.name: int(counts[c.id]) for c in spec.classes}
    if pixel_area_m2 is not None:
        report["class_area_m2"] = {
            c.name: float(counts[c.id] * pixel_area_m2) for c in spec.classes
        }


def _segment(ds: rasterio.DatasetReader, spec: ModelSpec, predictor: Predictor,
             params: ClassifyParams, stage: Path, progress: Progress) -> dict[str, Any]:
    report = base_report(ds, spec, predictor, params)
    tiling = tiling_for(ds, spec, report, params.raster)
    report.update(tile_size_px=tiling.src_tile, tile_overlap_px=tiling.src_overlap,
                  tiles=len(tiling.rows) * len(tiling.cols))
    writer = StripWriter(tiling.grid, spec.classes, stage / CLASSES_TIF, stage / CONFIDENCE_TIF)
    run = TileRun(predictor, Normalizer.from_spec(spec), spec.num_classes, params.batch_size)
    try:
        timer = stream_tiles(tiling, lambda win: read_window(ds, spec.bands, win), run, writer,
                             progress)
    finally:
        writer.close()
    class_stats(report, spec, writer.counts, pixel_area_m2(ds))
    report["timings_s"] = timer.seconds
    return report


def tiling_for(ds: rasterio.DatasetReader, spec: ModelSpec, report: dict[str, Any],
               path: Path, grid: Grid | None = None) -> Tiling:
    """Tiles over `grid` (default: the whole raster) sized to the model's pixel size."""
    ratio, src_tile = source_tile(ds, spec, report, path)
    src_overlap = min(int(round(spec.tile_overlap * ratio)), src_tile // 2)
    return Tiling(grid or Grid.of(ds), src_tile, src_overlap, spec.tile_size)


def pixel_area_m2(ds: rasterio.DatasetReader) -> float | None:
    """The area of the raster's centre pixel, measured as the polygons are (`PixelAreas`)."""
    if ds.crs is None:
        return None
    c, r = ds.width // 2, ds.height // 2
    return float(PixelAreas(ds.crs, ds.transform)(np.array([shapely.box(c, r, c + 1, r + 1)]))[0])


def _classify_scenes(ds: rasterio.DatasetReader, spec: ModelSpec, predictor: Predictor,
                     params: ClassifyParams, stage: Path, progress: Progress) -> dict[str, Any]:
    """Scene models label whole tiles: the class raster is at tile resolution, polygons a grid."""
    report = base_report(ds, spec, predictor, params)
    _, src_tile = source_tile(ds, spec, report, params.raster)
    rows = list(range(0, ds.height, src_tile))
    cols = list(range(0, ds.width, src_tile))
    normalize = Normalizer.from_spec(spec)
    classes = np.full((len(rows), len(cols)), 255, dtype=np.uint8)
    scores = np.full((len(rows), len(cols)), CONFIDENCE_NODATA, dtype=np.float32)
    timer = Timer()
    for i, row in enumerate(rows):
        tiles = []
        for j, col in enumerate(cols):
            raw, valid = read_window(ds, spec.bands, Window(col, row, src_tile, src_tile),
                                     out_size=spec.tile_size if src_tile != spec.tile_size else None)
            if valid.mean() >= 0.5:
                tiles.append((j, raw))
        for b in range(0, len(tiles), params.batch_size):
            progress.check()
            chunk = tiles[b : b + params.batch_size]
            ti = time.perf_counter()
            probs = predictor(np.stack([normalize(raw) for _, raw in chunk]))
            timer.add("inference", time.perf_counter() - ti)
            for (j, _), p in zip(chunk, probs, strict=True):
                classes[i, j] = int(p.argmax())
                scores[i, j] = float(p.max())
        progress((i + 1) / len(rows), f"tile row {i + 1}/{len(rows)}")
    transform = ds.transform @ rasterio.Affine.scale(src_tile)
    grid = Grid(len(cols), len(rows), ds.crs, transform)
    with rasterio.open(stage / CLASSES_TIF, "w", **output_profile(grid, "uint8", 255)) as out:
        out.write(classes, 1)
        out.write_colormap(1, colormap(spec.classes))
    with rasterio.open(stage / CONFIDENCE_TIF, "w",
                       **output_profile(grid, "float32", CONFIDENCE_NODATA)) as out:
        out.write(round_confidence(scores), 1)
    if not params.no_polygons:
        report["polygon_count"] = write_tile_grid(
            stage / POLYGONS_GPKG, classes, scores, transform, ds.crs, spec.classes
        )
    counts = np.bincount(classes.ravel(), minlength=256)
    tile_area = pixel_area_m2(ds)
    class_stats(report, spec, counts, None if tile_area is None else tile_area * src_tile**2)
    report.update(tile_size_px=src_tile, tiles=len(rows) * len(cols))
    report["timings_s"] = timer.seconds
    return report
