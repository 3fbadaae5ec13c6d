"""Fine-tune: train a head (then optionally the encoder) on polygons drawn by an analyst.

Steps: read and reproject the labels, split whole polygon groups into training and
validation, cut chips where the labels are, train the head on a frozen encoder, then
(optionally) the whole network with layer-wise learning-rate decay, stop early on
validation mIoU, and write a model package (staged, renamed when complete).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
import torch
import torch.nn.functional as F

from ..data.chips import (
    IGNORE,
    ChipReader,
    ChipSet,
    RasterLabels,
    cut_chip_from,
    group_polygons,
    spatial_split,
    train_windows,
    val_windows,
)
from ..data.labels import class_names, read_labels, reproject_geoms, value_name
from ..data.raster import (
    Normalizer,
    default_bands,
    open_raster,
    percentile_stretch,
    pixel_size_m,
    read_window,
    source_scale,
)
from ..errors import GfmError, InputError
from ..models import CONFIGS, build_encoder, load_encoder
from ..models.network import (
    PROBE_HEAD,
    Network,
    build_network,
    default_head_channels,
    save_network,
)
from ..outputs import MODEL, staged_output
from ..package import ModelSpec, default_classes, write_spec
from ..progress import Progress, silent
from ..runtime import resolve_device
from . import plots
from .export import export_onnx, quantize_int8
from .metrics import confusion, summarize
from .params import FinetuneParams, TrainingParams
from .quick import fit_probe

TRAINING_FULL = "full: the head on the frozen encoder, then the encoder if encoder_epochs"
TRAINING_QUICK = "quick: logistic regression on the frozen encoder's features (no network training)"

log = logging.getLogger(__name__)


def input_scaling(ds: rasterio.DatasetReader, bands: list[int]) -> tuple[list[float], list[float]]:
    """uint8 is used as is; other types get the 2-98 % stretch (offset, scale per band)."""
    if ds.dtypes[bands[0] - 1] == "uint8":
        return [0.0] * len(bands), [255.0] * len(bands)
    stretch = percentile_stretch(ds, bands)
    return [lo for lo, _ in stretch], [hi - lo for lo, hi in stretch]


def make_encoder(params: TrainingParams, tile: int | None):
    if params.encoder is not None:
        opts: dict[str, Any] = {"window_size": 6}
        if tile:
            opts["img_size"] = tile
        return load_encoder(params.encoder, **opts)
    if params.config not in CONFIGS:
        raise GfmError(f"unknown --config {params.config!r}; use one of {', '.join(CONFIGS)}")
    cfg = CONFIGS[params.config]
    return build_encoder(replace(cfg, img_size=tile) if tile else cfg)


def prepare_labels(params: TrainingParams, background_name: str = "background",
                   single_name: str | None = None):
    """The polygons, class names (the background class first) and each polygon's class id.
    `single_name`: the one class's name when no class field is given."""
    labels = read_labels(params.labels, params.class_field)
    if single_name is not None and params.class_field is None:
        labels.values = [single_name] * len(labels.values)
    names = class_names(labels.values)
    background = params.unlabeled == "background"
    if params.unlabeled not in ("ignore", "background"):
        raise GfmError("--unlabeled must be 'ignore' or 'background'")
    if background:
        names = [background_name] + [n for n in names if n != background_name]
    lookup = {n: i for i, n in enumerate(names)}
    ids = np.array([lookup[value_name(v)] for v in labels.values], dtype=np.int64)
    return labels, names, ids, background


def finetune(params: FinetuneParams, progress: Progress | None = None) -> dict[str, Any]:
    """Run the fine-tuning job; returns the report also written to the package.

    The package folder is checked and locked first, so a folder that may not be written
    is refused before any training, and no other job writes it meanwhile."""
    progress = progress or silent()
    encoder_file = Path(params.encoder) if params.encoder else None
    inputs: dict[str, Path | None] = {"labels": params.labels, "encoder": encoder_file}
    inputs |= {f"raster {p}": p for p in params.rasters}
    with staged_output(params.out, MODEL, params.overwrite, inputs, last=("model.json",)) as stage:
        report = _finetune(params, stage, progress)
    progress(1.0, "done")
    return report


@dataclass
class PlacedLabels:
    """The label polygons in each raster's CRS, and which of them touch each raster."""

    per_raster: list[tuple[Path, np.ndarray, np.ndarray]]
    used: np.ndarray  # polygons touching any raster
    crs: Any  # the first raster's CRS: where the split is computed


@dataclass
class LabelSplit:
    is_val: np.ndarray
    group: np.ndarray
    reach: float


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """What a job's `outputs` show of a fine-tune report (the whole report is report.json)."""
    validation = report["validation"]
    return {"classes": report["classes"], "split": report["split"], "time_s": report["time_s"],
            "training": report.get("training"),
            "warnings": report.get("warnings", []),
            "validation": {"overall_accuracy": validation["overall_accuracy"],
                           "mean_iou": validation["mean_iou"],
                           # no validation pixels of a class: its IoU is unknown, not 0
                           "iou": {n: c.get("iou") if c.get("pixels") else None
                                   for n, c in validation["per_class"].items()}}}


# augment(images, labels, rng) -> (images, labels): a job's own training augmentation
Augment = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@dataclass
class TrainingSetup:
    """What differs between the jobs that train on drawn polygons (fine-tune, fine-tune
    for changes); the rest of the pipeline is `train_package`."""

    rasters: list[Path]  # the grids labels are placed on and chips cut from
    make_spec: Callable[[list[str], bool, Any], ModelSpec]  # (names, background, encoder)
    inputs: dict[str, Any]  # what the report names as the job's inputs
    open_source: SourceOpener | None = None
    background_name: str = "background"
    single_name: str | None = None  # the one class's name without a class field
    augment: Augment | None = None
    scores: Callable[[np.ndarray, list[str]], dict[str, Any]] | None = None  # more metrics
    quick: bool = False  # fit a linear probe on frozen features instead of training


def _finetune(params: FinetuneParams, stage: Path, progress: Progress) -> dict[str, Any]:
    setup = TrainingSetup(
        params.rasters, lambda names, bg, enc: _make_spec(params, names, bg, enc),
        {"rasters": [str(p) for p in params.rasters]}, quick=params.quick)
    return train_package(params, setup, stage, progress)


def train_package(params: TrainingParams, setup: TrainingSetup, stage: Path,
                  progress: Progress) -> dict[str, Any]:
    """Labels -> split -> chips -> two-stage training -> the model package in `stage`."""
    t_start = time.perf_counter()
    rng = np.random.default_rng(params.seed)
    torch.manual_seed(params.seed)
    labels, names, ids, background = prepare_labels(params, setup.background_name,
                                                    setup.single_name)
    device = resolve_device(params.device)
    placed = place_labels(setup.rasters, params, labels, names, ids, background)
    encoder = make_encoder(params, params.tile_size)
    spec = setup.make_spec(names, background, encoder)
    split = split_labels(params, labels, ids, placed, spec.tile_size * (spec.gsd_m or 1.0) / 4)
    progress(0.02, "cutting chips")
    train_set, val_set = cut_chips(params, spec, placed, ids, split, background, rng, progress,
                                   setup.open_source)
    val_note = "held-out polygon groups"
    warnings = scale_warnings(setup.rasters, spec)
    if not len(val_set):
        val_note = "none held out (too few polygons per class); scores are on training chips"
        warnings.append(f"no validation polygons: {val_note}")
    net = build_network(spec, encoder).to(device)
    x_train, y_train = train_set.arrays()
    x_val, y_val = (val_set if len(val_set) else train_set).arrays()
    if spec.task == "scene_classification":
        y_train, y_val = _scene_labels(y_train), _scene_labels(y_val)
    trainer = Trainer(net, device, spec, params, progress, setup.augment)
    if setup.quick:
        history = fit_probe(net, device, (x_train, y_train), (x_val, y_val), names,
                            params.batch_size, params.seed, progress)
    else:
        history = trainer.run(x_train, y_train, x_val, y_val)
    cm = trainer.evaluate(x_val, y_val)
    used = placed.used
    report: dict[str, Any] = {
        "task": spec.task, "classes": names, **setup.inputs,
        "labels": str(params.labels), "class_field": params.class_field,
        "unlabeled": params.unlabeled, "device": str(device),
        "training": TRAINING_QUICK if setup.quick else TRAINING_FULL,
        "encoder": str(params.encoder) if params.encoder else f"random init ({params.config})",
        "split": {
            "method": f"whole polygon groups (polygons within {split.reach:.1f} m form one group)",
            "validation": val_note, "train_polygons": int((~split.is_val[used]).sum()),
            "val_polygons": int(split.is_val[used].sum()),
            "val_polygon_fids": [int(i) for i in np.nonzero(split.is_val)[0]],
            "train_chips": len(train_set), "val_chips": len(val_set),
        },
        "validation": summarize(cm, spec.class_names), "history": history, "warnings": warnings,
    }
    if setup.scores is not None:
        report["validation"] |= setup.scores(cm, spec.class_names)
    progress(0.95, "writing model package")
    write_package(stage, params, net, spec, history, cm, report, t_start)
    return report


def scale_warnings(rasters: list[Path], spec: Any) -> list[str]:
    """Pixel-size mismatches between the rasters and the model, said once per raster."""
    found = []
    for path in rasters:
        with open_raster(path) as ds:
            _, warning = source_scale(ds, spec)
        if warning:
            log.warning("%s: %s", path, warning)
            found.append(f"{Path(path).name}: {warning}")
    return found


def place_labels(rasters: list[Path], params: TrainingParams, labels: Any, names: list[str],
                 ids: np.ndarray, background: bool) -> PlacedLabels:
    """Reproject every polygon to each raster's CRS and keep those that touch it."""
    per_raster: list[tuple[Path, np.ndarray, np.ndarray]] = []
    first_crs = None
    for path in rasters:
        with open_raster(path) as ds:
            if ds.crs is None:
                raise InputError(path, "raster has no coordinate reference system; "
                                 "labels cannot be placed on it")
            geoms = reproject_geoms(labels.geoms, labels.crs, ds.crs)
            hits = np.nonzero(shapely.intersects(geoms, shapely.box(*ds.bounds)))[0]
            per_raster.append((Path(path), geoms, hits))
            first_crs = first_crs or ds.crs
    if not any(len(h) for _, _, h in per_raster):
        raise InputError(params.labels, "no label polygon overlaps the raster(s) "
                         f"{', '.join(str(p) for p in rasters)} (check the CRS and extent)")
    used = np.unique(np.concatenate([h for _, _, h in per_raster]))
    present = sorted(set(ids[used].tolist()) | ({0} if background else set()))
    if len(present) < 2:
        raise InputError(params.labels, f"only one class ({names[present[0]]!r}) is drawn; with "
                         "--unlabeled ignore at least two classes are needed (or use "
                         "--unlabeled background)")
    return PlacedLabels(per_raster, used, first_crs)


def _make_spec(params: FinetuneParams, names: list[str], background: bool, encoder: Any) -> ModelSpec:
    """The package's model.json: classes, input rules (from the first raster), tiles, head."""
    with open_raster(params.rasters[0]) as ds:
        bands = params.bands or default_bands(ds)
        offset, scale = input_scaling(ds, bands)
        gsd = pixel_size_m(ds)
    tile = params.tile_size or encoder.config.img_size
    return ModelSpec(
        task=params.task, classes=default_classes(names, background=background),
        encoder=encoder.config.to_json(), bands=bands, scale_offset=offset, scale=scale,
        gsd_m=gsd, tile_size=tile, tile_overlap=tile // 4,
        head=_head(params, encoder),
        name=params.name or Path(params.out).name,
        description=f"fine-tuned on {params.labels.name}"
        + (f" field {params.class_field}" if params.class_field else ""),
    )


def _head(params: FinetuneParams, encoder: Any) -> dict[str, Any]:
    if params.quick:
        return {"type": PROBE_HEAD}
    return {"type": "upernet" if params.task == "segmentation" else "linear",
            "channels": params.head_channels or default_head_channels(encoder.config.embed_dim)}


def split_labels(params: TrainingParams, labels: Any, ids: np.ndarray, placed: PlacedLabels,
                 reach: float) -> LabelSplit:
    """Whole groups of polygons (grouped within a chip's reach) are held out for validation."""
    used = placed.used
    geoms = reproject_geoms(labels.geoms[used], labels.crs, placed.crs)
    groups_used = group_polygons(geoms, reach)
    if groups_used.max() == 0:  # one cluster: fall back to polygons that touch
        reach = 0.0
        groups_used = group_polygons(geoms, reach)
    val_used = spatial_split(ids[used], groups_used, params.val_fraction, params.seed)
    is_val = np.zeros(len(ids), dtype=bool)
    group = np.full(len(ids), -1)
    is_val[used], group[used] = val_used, groups_used
    return LabelSplit(is_val, group, reach)


# open_source(path) -> a context yielding (the dataset whose grid the chips are cut on,
# read(window, out_size)): a raster, or a change pair on its earlier date's grid
SourceOpener = Callable[[Path], AbstractContextManager[tuple[rasterio.DatasetReader, ChipReader]]]


@contextmanager
def raster_source(spec: ModelSpec, path: Path) -> Iterator[tuple[rasterio.DatasetReader, ChipReader]]:
    with open_raster(path) as ds:
        yield ds, lambda win, size: read_window(ds, spec.bands, win, out_size=size)


def cut_chips(params: TrainingParams, spec: ModelSpec, placed: PlacedLabels, ids: np.ndarray,
              split: LabelSplit, background: bool, rng: np.random.Generator,
              progress: Progress, open_source: SourceOpener | None = None) -> tuple[ChipSet, ChipSet]:
    """Training chips where the training polygons are (classes balanced), validation chips
    where the held-out ones are; each masks out the other's polygons."""
    normalize = Normalizer.from_spec(spec)
    opener = open_source or (lambda path: raster_source(spec, path))
    tile = spec.tile_size
    train_set, val_set = ChipSet(), ChipSet()
    n_train_polys = max(int((~split.is_val[placed.used]).sum()), 1)
    for path, geoms, hits in placed.per_raster:
        if not len(hits):
            continue
        rl = RasterLabels(geoms[hits], ids[hits], split.is_val[hits], split.group[hits])
        with opener(path) as (ds, read):
            ratio, _ = source_scale(ds, spec)  # its warning: `scale_warnings`
            src_tile = max(int(round(tile * ratio)), 8)
            share = int(np.ceil(params.chips * (~rl.is_val).sum() / n_train_polys))
            for chips, windows, is_val in (
                    (train_set, train_windows(ds, rl, src_tile, share, rng), False),
                    (val_set, val_windows(ds, rl, src_tile, max(params.chips // 4, 8), rng), True)):
                for win in windows:
                    progress.check()
                    img, lab = cut_chip_from(read, ds.transform, normalize, rl, win, tile, is_val,
                                             background)
                    if (lab != IGNORE).any():
                        chips.images.append(img)
                        chips.labels.append(lab)
    if not len(train_set):
        raise InputError(params.labels, "no training chip has labelled pixels")
    return train_set, val_set


def write_package(stage: Path, params: TrainingParams, net: Network, spec: ModelSpec,
                   history: list[dict], cm: np.ndarray, report: dict[str, Any], t_start: float) -> None:
    save_network(net, spec, stage)
    if not params.no_onnx:
        export_onnx(net, spec, stage / "model.onnx")
        quantize_int8(stage / "model.onnx")
    plots.training_curve(history, stage / "training_curve.png")
    plots.confusion_matrix(cm, spec.class_names, stage / "confusion_matrix.png")
    report["time_s"] = round(time.perf_counter() - t_start, 2)
    (stage / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    write_spec(stage, spec)


def _scene_labels(masks: np.ndarray) -> np.ndarray:
    """A chip's scene class: the most common labelled class in it."""
    out = np.empty(len(masks), dtype=np.int64)
    for i, m in enumerate(masks):
        vals = m[m != IGNORE]
        out[i] = np.bincount(vals).argmax() if vals.size else IGNORE
    return out


class Trainer:
    """Two-stage training: head on a frozen encoder, then (optionally) everything with LLRD."""

    def __init__(self, net: Network, device: torch.device, spec: ModelSpec,
                 params: TrainingParams, progress: Progress, augment: Augment | None = None) -> None:
        self.net, self.device, self.spec, self.params = net, device, spec, params
        self.augment = augment
        self.rng = np.random.default_rng(params.seed + 1)  # batches and augmentation: the
        # same seed trains the same model, whatever ran before in the process
        self.progress = progress
        self.bf16 = device.type == "cuda"
        self.num_classes = spec.num_classes

    def run(self, x_train, y_train, x_val, y_val) -> list[dict]:
        p = self.params
        stages = [("head", p.epochs)] + ([("encoder", p.encoder_epochs)] if p.encoder_epochs else [])
        total = sum(n for _, n in stages)
        history: list[dict] = []
        best_score, best_state = -1.0, copy.deepcopy(self.net.state_dict())
        done = 0
        for stage, epochs in stages:
            opt = self._optimizer(stage)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
            stale = 0
            for _ in range(epochs):
                loss = self._epoch(stage, opt, x_train, y_train)
                sched.step()
                cm = self.evaluate(x_val, y_val)
                score = summarize(cm, self.spec.class_names)["mean_iou"] or 0.0
                done += 1
                history.append({"epoch": done, "stage": stage, "train_loss": loss,
                                "val_miou": score})
                self.progress(0.05 + 0.9 * done / total,
                              f"{stage} epoch {done}/{total}: loss {loss:.3f}, val mIoU {score:.3f}")
                if score > best_score + 1e-4:
                    best_score, stale = score, 0
                    best_state = copy.deepcopy(self.net.state_dict())
                else:
                    stale += 1
                    if stale >= p.patience:
                        log.info("early stop in the %s stage after epoch %d", stage, done)
                        break
        self.net.load_state_dict(best_state)
        return history

    def _optimizer(self, stage: str) -> torch.optim.Optimizer:
        p = self.params
        encoder = self.net.encoder
        if stage == "head":
            for prm in encoder.parameters():
                prm.requires_grad_(False)
            return torch.optim.AdamW(self.net.head.parameters(), lr=p.lr, weight_decay=1e-4)
        for prm in encoder.parameters():
            prm.requires_grad_(True)
        return torch.optim.AdamW(_layer_decay_groups(self.net, p.encoder_lr, p.layer_decay),
                                 weight_decay=0.05)

    def _epoch(self, stage: str, opt: torch.optim.Optimizer, x: np.ndarray, y: np.ndarray) -> float:
        self.net.train()
        if stage == "head":
            self.net.encoder.eval()
        order = self.rng.permutation(len(x))
        bs = self.params.batch_size
        losses = []
        for b in range(0, len(order), bs):
            self.progress.check()
            idx = order[b : b + bs]
            if len(idx) < 2 and self.spec.task != "scene_classification" and len(order) > 1:
                continue  # BatchNorm needs more than one sample
            x_np, y_np = _augment(x[idx], y[idx], self.spec.task, self.rng)
            if self.augment is not None:
                x_np, y_np = self.augment(x_np, y_np, self.rng)
            xb = torch.from_numpy(x_np).to(self.device)
            yb = torch.from_numpy(y_np).to(self.device).long()
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.net.logits(xb)
            loss = F.cross_entropy(logits.float(), yb, ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
            opt.step()
            losses.append(float(loss.detach()))
        return float(np.mean(losses)) if losses else float("nan")

    @torch.no_grad()
    def evaluate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        self.net.eval()
        cm = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        for b in range(0, len(x), self.params.batch_size):
            xb = torch.from_numpy(x[b : b + self.params.batch_size]).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                pred = self.net.logits(xb).float().argmax(dim=1).cpu().numpy()
            cm += confusion(pred, y[b : b + self.params.batch_size], self.num_classes)
        return cm


def _augment(x: np.ndarray, y: np.ndarray, task: str,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random flips and 90-degree turns: imagery seen from above has no up."""
    k = int(rng.integers(4))
    flip = rng.random() < 0.5
    x = np.rot90(x, k, axes=(2, 3))
    if flip:
        x = x[..., ::-1]
    if task != "scene_classification":  # a label mask turns with its image
        y = np.rot90(y, k, axes=(1, 2))
        if flip:
            y = y[..., ::-1]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def _layer_decay_groups(net: Network, lr: float, decay: float) -> list[dict]:
    """Layer-wise LR decay as timm does it (`param_groups_layer_decay` with the Swin's own
    `group_matcher`: patch merging goes with the stage it opens): each Swin block a factor
    `decay` below the next, no weight decay for norms, biases and position tables; the
    head at `lr`."""
    from timm.optim import param_groups_layer_decay

    enc = net.encoder
    skip = enc.no_weight_decay() if hasattr(enc, "no_weight_decay") else set()
    groups = param_groups_layer_decay(enc, weight_decay=0.05, no_weight_decay_list=skip,
                                      layer_decay=decay)
    for group in groups:
        group["lr"] = lr * group.pop("lr_scale")
    groups.append({"params": list(net.head.parameters()), "lr": lr})
    return groups


