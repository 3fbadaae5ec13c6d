"""`gfm suggest`: places to draw the next training polygons, as a GeoPackage of squares.

One streaming pass of the model over the raster (the tiles and blending classify uses)
gives each square cell's uncertainty; the most uncertain cells that hold no labelled
polygon are encoded once more, and `suggest_select.pick_diverse` keeps those unlike the
labelled polygons and each other. Each suggestion carries its score, uncertainty, mean
confidence, novelty and the two classes the model hesitates between.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyogrio
import rasterio
import shapely
import torch
from rasterio.windows import Window

from ..atomic import atomic_path
from ..data.gpkg_writer import crs_string
from ..data.labels import read_labels, reproject_geoms
from ..data.raster import Normalizer, check_bands, open_raster, read_window
from ..errors import InputError
from ..models.network import Network, load_network
from ..package import ModelSpec, read_spec
from ..progress import Progress, silent
from ..runtime import make_predictor, resolve_device
from ..runtime.predictors import TorchPredictor
from .classify import GDAL_CACHE_MB, tiling_for
from .output_file import check_output_file
from .params import SuggestParams
from .suggest_select import CellStats, CellTable, Pick, pick_diverse
from .tiling import TileRun, stream_tiles

log = logging.getLogger(__name__)
POOL_PER_PICK = 5  # candidates encoded per suggestion asked for
MAX_LABELLED = 256  # labelled polygons encoded to measure novelty against
LABELLED_SHARE = 0.5  # a cell this much covered by labels is labelled already
LAYER = "suggestions"


def suggest(params: SuggestParams, progress: Progress | None = None) -> dict[str, Any]:
    """Run the suggest job; returns its report (what the job's outputs show)."""
    progress = progress or silent()
    t0 = time.perf_counter()
    spec = read_spec(params.model)
    if spec.task != "segmentation":
        raise InputError(params.model, f"is a {spec.task} model; suggestions come from a "
                         "model that maps classes pixel by pixel (segmentation)")
    labels_path = labels_file(params)
    target = suggestion_target(params, labels_path)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), open_raster(params.raster) as ds:
        check_bands(ds, spec, params.raster)
        report: dict[str, Any] = {"raster": str(params.raster), "model": str(params.model),
                                  "labels": str(labels_path) if labels_path else None,
                                  "warnings": []}
        tiling = tiling_for(ds, spec, report, params.raster)
        cell = params.cell or max(tiling.src_tile // 2, 8)
        predictor = make_predictor(params.model, spec, params.runtime, params.device,
                                   params.batch_size, progress, pixels=ds.width * ds.height)
        stats = CellStats(ds.width, ds.height, cell, spec.num_classes)
        run = TileRun(predictor, Normalizer.from_spec(spec), spec.num_classes, params.batch_size)
        stream_tiles(tiling, lambda win: read_window(ds, spec.bands, win), run,
                     lambda *_: None, progress.span(0, 0.8), probs_sink=stats)
        net = cast(Network, predictor.net) if isinstance(predictor, TorchPredictor) else None
        del predictor
        table = stats.table()
        boxes = cell_boxes(table, ds.transform, ds.width, ds.height)
        labelled = labelled_polygons(labels_path, ds)
        excluded = labelled_share(boxes, labelled) >= LABELLED_SHARE
        candidates = table.candidates(max(POOL_PER_PICK * params.count, 50), excluded)
        progress(0.85, f"encoding {len(candidates)} candidate places")
        encoder = CellEncoder(net or load_network(params.model, spec), spec, params.device,
                              tiling.src_tile, cell)
        centres = np.stack([table.col[candidates] + cell / 2, table.row[candidates] + cell / 2], 1)
        features = encoder(ds, centres, params.batch_size, progress)
        known = encoder(ds, polygon_centres(labelled, ds.transform), params.batch_size, progress)
        picks = pick_diverse(table, candidates, features, known, params.count)
        write_suggestions(target, picks, table, boxes, spec, ds.crs)
    report.update(out=str(target), suggestions=len(picks), cell_px=cell,
                  cells_scored=int((table.valid >= 0.5).sum()), candidates=len(candidates),
                  labelled_polygons=len(labelled), time_s=round(time.perf_counter() - t0, 2))
    if len(picks) < params.count:
        report["warnings"].append(f"{len(picks)} of the {params.count} places asked for: no "
                                  "more cells with data lie apart from each other and from "
                                  f"the labels (a smaller cell than {cell} px finds more)")
    progress(1.0, "done")
    return report


def suggestion_target(params: SuggestParams, labels: Path | None) -> Path:
    """Where the suggestions go: never the raster, the labels read (given or the model's
    own), nor a file in the model package."""
    return check_output_file(params.out, ".gpkg", params.overwrite,
                             {"raster": params.raster, "labels": labels},
                             inside_not=Path(params.model))


def labels_file(params: SuggestParams) -> Path | None:
    """The polygons to stay away from: given, else those the model was trained on."""
    if params.labels is not None:
        return Path(params.labels)
    try:
        trained = json.loads((Path(params.model) / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    path = Path(trained.get("labels") or "")
    return path if trained.get("labels") and path.is_file() else None


def labelled_polygons(path: Path | None, ds: rasterio.DatasetReader) -> np.ndarray:
    """The labelled polygons in the raster's CRS, cut to the raster (those off it go)."""
    if path is None:
        return np.array([], dtype=object)
    labels = read_labels(path, None)
    geoms = np.asarray(reproject_geoms(labels.geoms, labels.crs, ds.crs), dtype=object)
    inside = shapely.intersection(geoms, shapely.box(*ds.bounds))
    return inside[~shapely.is_empty(inside)]


def labelled_share(boxes: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """How much of each cell the labelled polygons cover (0 to 1)."""
    if not len(labelled):
        return np.zeros(len(boxes))
    covered = shapely.area(shapely.intersection(boxes, shapely.union_all(labelled)))
    return covered / np.maximum(shapely.area(boxes), 1e-12)


def cell_boxes(table: CellTable, transform: rasterio.Affine, width: int,
               height: int) -> np.ndarray:
    """Each cell in the raster's CRS, cut at the raster's edge (north-up rasters: the
    transform's corners)."""
    xs0, ys0 = transform @ (table.col, table.row)
    xs1, ys1 = transform @ (np.minimum(table.col + table.cell, width),
                            np.minimum(table.row + table.cell, height))
    return shapely.box(np.minimum(xs0, xs1), np.minimum(ys0, ys1),
                       np.maximum(xs0, xs1), np.maximum(ys0, ys1))


def polygon_centres(polygons: np.ndarray, transform: rasterio.Affine) -> np.ndarray:
    """A point inside each labelled polygon (at most MAX_LABELLED, spread), in pixels."""
    if not len(polygons):
        return np.zeros((0, 2))
    keep = np.linspace(0, len(polygons) - 1, min(len(polygons), MAX_LABELLED)).astype(int)
    points = shapely.point_on_surface(polygons[keep])
    cols, rows = ~transform @ (shapely.get_x(points), shapely.get_y(points))
    return np.stack([cols, rows], axis=1)


class CellEncoder:
    """The encoder's last-stage features, pooled over a cell, for cells anywhere on the
    raster: a tile around each cell's centre, so the features see the cell's context."""

    def __init__(self, net: Network, spec: ModelSpec, device: str, src_tile: int,
                 cell: int) -> None:
        self.device = resolve_device(device)
        self.encoder = net.encoder.to(self.device).eval()
        self.spec, self.src_tile = spec, src_tile
        self.normalize = Normalizer.from_spec(spec)
        self.share = min(cell / src_tile, 1.0)  # the middle of the feature map a cell covers

    @torch.inference_mode()
    def __call__(self, ds: rasterio.DatasetReader, centres: np.ndarray, batch_size: int,
                 progress: Progress) -> np.ndarray:
        out = []
        half = self.src_tile / 2
        size = self.spec.tile_size if self.src_tile != self.spec.tile_size else None
        for b in range(0, len(centres), batch_size):
            progress.check()
            tiles = [self.normalize(read_window(ds, self.spec.bands, Window(
                int(round(cx - half)), int(round(cy - half)), self.src_tile, self.src_tile),
                out_size=size)[0]) for cx, cy in centres[b : b + batch_size]]
            deepest = self.encoder(torch.from_numpy(np.stack(tiles)).to(self.device))[-1]
            out.append(self._pool(deepest).float().cpu().numpy())
        width = self.encoder.out_channels[-1]
        return np.concatenate(out) if out else np.zeros((0, width), np.float32)

    def _pool(self, feats: torch.Tensor) -> torch.Tensor:
        h, w = feats.shape[-2:]
        dh, dw = max(int(round(h * self.share)), 1), max(int(round(w * self.share)), 1)
        top, left = (h - dh) // 2, (w - dw) // 2
        return feats[:, :, top : top + dh, left : left + dw].mean(dim=(2, 3))


def write_suggestions(target: Path, picks: list[Pick], table: CellTable, boxes: np.ndarray,
                      spec: ModelSpec, crs: Any) -> None:
    """The GeoPackage, written under a temporary name and renamed when complete."""
    names = spec.class_names
    idx = np.array([p.cell for p in picks], dtype=int)
    first = [names[int(k)] for k in table.first[idx]]
    second = [names[int(k)] for k in table.second[idx]]
    fields = {
        "rank": np.arange(1, len(picks) + 1, dtype=np.int32),
        "score": np.array([p.score for p in picks]),
        "uncertainty": table.uncertainty[idx],
        "confidence": table.confidence[idx],
        "novelty": np.array([p.novelty for p in picks]),
        "class_1": np.array(first, dtype=object),
        "class_2": np.array(second, dtype=object),
        "hesitates": np.array([f"{a} / {b}" for a, b in zip(first, second, strict=True)],
                              dtype=object),
    }
    with atomic_path(target, suffix=".gpkg", exists=False) as tmp:
        pyogrio.raw.write(str(tmp), shapely.to_wkb(boxes[idx]), list(fields.values()),
                          list(fields), layer=LAYER, driver="GPKG", geometry_type="Polygon",
                          crs=crs_string(crs))
