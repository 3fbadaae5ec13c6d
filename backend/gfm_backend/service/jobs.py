"""The job types the service runs: one registry entry per type.

An entry says which params a job takes (`Field`s, CLI names), how to call the task
function (the same one the CLI calls), which resource it needs (`gpu`: the one heavy
lane, one job at a time by default; `cpu`: beside it) and whether it can be resumed.
Adding a type is one `register(JobType(...))`; modules named in `$GFM_SERVICE_PLUGINS`
(comma-separated) are imported at startup by the server and its workers, so extra types
can be plugged in without touching this file.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import GfmError, InputError
from ..outputs import CLASSIFY as CLASSIFY_OUTPUT
from ..outputs import MODEL as MODEL_OUTPUT
from ..outputs import PRETRAIN as PRETRAIN_OUTPUT
from ..outputs import OutputKind, check_output_dir
from ..progress import Progress
from .params import Field, ModelResolver, ParamError, validate, vector_fields

MAX_BATCH, MAX_EPOCHS, MAX_BAND = 4096, 100_000, 100_000
MAX_SEED = 2**32 - 1  # numpy and torch seeds
INPUT_KINDS = frozenset({"raster", "rasters", "vector", "path", "dir", "model"})
OVERWRITE_HELP = "replace a previous output of this kind in out (never anybody else's files)"

GPU, CPU = "gpu", "cpu"
RESOURCES = (GPU, CPU)
PLUGINS_ENV = "GFM_SERVICE_PLUGINS"

RunFn = Callable[[dict[str, Any], Progress], dict[str, Any]]
CheckFn = Callable[[dict[str, Any]], None]


class JobTypeError(GfmError):
    """An unknown job type, or one this version cannot run yet."""


@dataclass(frozen=True)
class JobType:
    """A kind of job. `run(params, progress) -> outputs` runs in a worker process and
    must be importable there (a module-level function); `check` does cross-field checks
    before queueing; `resource` is `gpu`, `cpu` or a function of the params."""

    name: str
    fields: tuple[Field, ...]
    run: RunFn
    resource: str | Callable[[dict[str, Any]], str] = GPU
    resumable: bool = False
    check: CheckFn | None = None
    help: str = ""
    output: OutputKind | None = None  # the kind of folder `out` is (the output-folder rule)

    def __post_init__(self) -> None:
        if self.resumable and "resume" not in {f.name for f in self.fields}:
            raise ValueError(f"resumable job type {self.name!r} needs a 'resume' bool field")

    def validate(self, params: dict[str, Any], resolve_model: ModelResolver | None = None
                 ) -> dict[str, Any]:
        clean = validate(self.fields, params, self.name, resolve_model)
        if self.output is not None:  # first: what may not be written matters most
            self._check_output(clean)
        if self.check is not None:
            self.check(clean)
        return clean

    def _check_output(self, p: dict[str, Any]) -> None:
        """The output-folder rule, before queueing: a 400 naming the folder, not a failed job."""
        inputs: dict[str, Any] = {}
        for f in self.fields:
            if f.kind in INPUT_KINDS and p.get(f.name) is not None:
                values = p[f.name] if isinstance(p[f.name], list) else [p[f.name]]
                inputs |= {f"{f.name} {v}" if len(values) > 1 else f.name: v for v in values}
        try:
            check_output_dir(p["out"], self.output, bool(p.get("overwrite")), inputs,
                             continuing=bool(p.get("resume")))
        except InputError as exc:
            raise ParamError("out", str(exc)) from exc

    def writes(self, params: dict[str, Any]) -> str | None:
        """The folder a job of this type writes, as a real path (for one-writer-at-a-time)."""
        if self.output is None or not params.get("out"):
            return None
        return str(Path(params["out"]).resolve())

    def resource_for(self, params: dict[str, Any]) -> str:
        kind = self.resource(params) if callable(self.resource) else self.resource
        if kind not in RESOURCES:
            raise ValueError(f"job type {self.name!r} asked for unknown resource {kind!r}")
        return kind

    def describe(self) -> dict[str, Any]:
        return {"type": self.name, "help": self.help, "resumable": self.resumable,
                "resource": self.resource if isinstance(self.resource, str) else "gpu or cpu "
                "(cpu when params.device is 'cpu')",
                "params": [f.describe() for f in self.fields]}


_REGISTRY: dict[str, JobType] = {}
# Types the design promises whose task functions are not in this version yet (POST answers
# "not available in this version"); a real `register` of the same name takes precedence.
PLANNED: dict[str, str] = {}


def register(job_type: JobType) -> JobType:
    """Add (or replace) a job type; returns it so it can be used as a module constant."""
    _REGISTRY[job_type.name] = job_type
    return job_type


def get_job_type(name: str) -> JobType:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in PLANNED:
        raise JobTypeError(f"job type {name!r} ({PLANNED[name]}) is not available in this "
                           f"version of the backend ({__version__})")
    raise JobTypeError(f"unknown job type {name!r}; use one of "
                       f"{', '.join(sorted(_REGISTRY))}")


def job_types() -> list[JobType]:
    return list(_REGISTRY.values())


def load_plugins() -> list[str]:
    """Import the modules named in $GFM_SERVICE_PLUGINS (they call `register`)."""
    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise GfmError(f"{PLUGINS_ENV}: cannot import job-type module {name!r} ({exc})") from exc
    return names


def _device_resource(params: dict[str, Any]) -> str:
    return CPU if params.get("device") == "cpu" else GPU


def _files(folder: str) -> dict[str, str]:
    path = Path(folder)
    return {p.name: str(p) for p in sorted(path.iterdir()) if not p.name.startswith(".")}


# ----------------------------------------------------------------------------- classify
def _check_classify(p: dict[str, Any]) -> None:
    from ..data.raster import check_bands, open_raster
    from ..package import read_spec

    spec = read_spec(Path(p["model"]))
    with open_raster(p["raster"]) as ds:
        try:
            check_bands(ds, spec, p["raster"])
        except InputError as exc:
            raise ParamError("raster", str(exc)) from exc
    if p["runtime"] == "onnx" and not (Path(p["model"]) / "model.onnx").is_file():
        raise ParamError("runtime", f"{p['model']} has no model.onnx; use runtime 'torch' or "
                         "export the model first (an export job)")


def run_classify(p: dict[str, Any], progress: Progress) -> dict[str, Any]:
    from ..tasks.classify import ClassifyParams, classify

    report = classify(ClassifyParams(
        raster=p["raster"], model=p["model"], out=p["out"], runtime=p["runtime"],
        device=p["device"], batch_size=p["batch_size"], min_area_m2=p["min_area"],
        simplify=p["simplify"], polygons=not p["no_polygons"], overwrite=p["overwrite"]), progress)
    keep = ("predictor", "size", "crs", "warnings", "polygon_count", "class_pixels",
            "class_area_m2", "timings_s", "peak_rss_mb")
    return {"out": p["out"], "files": report["outputs"]} | {k: report[k] for k in keep if k in report}


CLASSIFY = register(JobType(
    name="classify", run=run_classify, resource=_device_resource, check=_check_classify,
    output=CLASSIFY_OUTPUT,
    help="classify a raster with a model package (gfm classify)",
    fields=(
        Field("raster", "raster", required=True, help="raster to classify"),
        Field("model", "model", required=True, help="model package folder, or a name GET /models lists"),
        Field("out", "out_dir", required=True, help="output folder"),
        Field("runtime", "str", default="torch", choices=("torch", "onnx")),
        Field("device", "device", default="auto"),
        Field("batch_size", "int", default=8, minimum=1, maximum=MAX_BATCH),
        Field("min_area", "float", default=0.0, minimum=0, maximum=1e12, aliases=("min_area_m2",),
              help="merge regions smaller than this (m2) into their neighbours"),
        Field("simplify", "float", default=0.0, minimum=0, maximum=1e7,
              help="polygon simplification tolerance in CRS units (0: none)"),
        Field("no_polygons", "bool", default=False, negation="polygons"),
        Field("overwrite", "bool", default=False, help=OVERWRITE_HELP),
    ),
))


# ----------------------------------------------------------------------------- finetune
def _check_finetune(p: dict[str, Any]) -> None:
    from ..data.raster import open_raster

    if p["class_field"] is not None:
        fields = vector_fields(p["labels"])
        if p["class_field"] not in fields:
            raise ParamError("class_field", f"{p['labels']} has no field {p['class_field']!r}; "
                             f"fields are: {', '.join(fields) or '(none)'}")
    if p["tile_size"] is not None and p["tile_size"] % 32:
        raise ParamError("tile_size", f"must be a multiple of 32 (the encoder's patch x window "
                         f"grid), got {p['tile_size']}")
    for raster in p["rasters"] if p["bands"] else ():
        with open_raster(raster) as ds:
            bad = [b for b in p["bands"] if b > ds.count]
            if bad:
                raise ParamError("bands", f"{raster} has {ds.count} band(s); no band {bad[0]}")


def run_finetune(p: dict[str, Any], progress: Progress) -> dict[str, Any]:
    from ..tasks.finetune import FinetuneParams, finetune

    report = finetune(FinetuneParams(
        rasters=p["rasters"], labels=p["labels"], class_field=p["class_field"], out=p["out"],
        encoder=p["encoder"], config=p["config"], task=p["task"], unlabeled=p["unlabeled"],
        device=p["device"], bands=p["bands"], epochs=p["epochs"],
        encoder_epochs=p["encoder_epochs"], batch_size=p["batch_size"], chips=p["chips"],
        tile_size=p["tile_size"], patience=p["patience"], head_channels=p["head_channels"],
        seed=p["seed"], onnx=not p["no_onnx"], overwrite=p["overwrite"]), progress)
    return {"out": p["out"], "files": _files(p["out"]), "classes": report["classes"],
            "split": report["split"],
            "validation": {k: report["validation"][k] for k in ("overall_accuracy", "mean_iou")},
            "time_s": report["time_s"]}


FINETUNE = register(JobType(
    name="finetune", run=run_finetune, resource=_device_resource, check=_check_finetune,
    output=MODEL_OUTPUT,
    help="train a model package on polygons drawn over rasters (gfm finetune)",
    fields=(
        Field("rasters", "rasters", required=True, aliases=("raster",),
              help="raster(s) to train on (a list, or one path)"),
        Field("labels", "vector", required=True, help="polygon file (GPKG, GeoJSON, SHP...)"),
        Field("class_field", "str", help="field holding each polygon's class"),
        Field("out", "out_dir", required=True, help="model package folder to write"),
        Field("encoder", "path", help="encoder weights: gfm.pth, Swin checkpoint, model package"),
        Field("config", "str", default="base", choices=("base", "tiny")),
        Field("task", "str", default="segmentation", choices=("segmentation", "scene_classification")),
        Field("unlabeled", "str", default="ignore", choices=("ignore", "background")),
        Field("device", "device", default="auto"),
        Field("bands", "ints", minimum=1, maximum=MAX_BAND, help="1-based raster bands to read"),
        Field("epochs", "int", default=30, minimum=0, maximum=MAX_EPOCHS),
        Field("encoder_epochs", "int", default=0, minimum=0, maximum=MAX_EPOCHS),
        Field("batch_size", "int", default=8, minimum=1, maximum=MAX_BATCH),
        Field("chips", "int", default=256, minimum=1, maximum=100_000,
              help="training chips to cut (memory: about 0.5 MB each at 192 px)"),
        Field("tile_size", "int", minimum=64, maximum=1536,
              help="chip size in px, a multiple of 32 (default: the encoder's)"),
        Field("head_channels", "int", minimum=8, maximum=1024),
        Field("patience", "int", default=8, minimum=1, maximum=MAX_EPOCHS),
        Field("seed", "int", default=0, minimum=0, maximum=MAX_SEED),
        Field("no_onnx", "bool", default=False, negation="onnx"),
        Field("overwrite", "bool", default=False, help=OVERWRITE_HELP),
    ),
))


# ------------------------------------------------------------------------------- export
def _check_export(p: dict[str, Any]) -> None:
    from ..tasks.export import export_target

    try:
        export_target(Path(p["model_dir"]), Path(p["out"]) if p["out"] else None, p["overwrite"])
    except InputError as exc:
        raise ParamError("out", str(exc)) from exc


def run_export(p: dict[str, Any], progress: Progress) -> dict[str, Any]:
    from ..tasks.export import export

    progress(0.0, "exporting to ONNX")
    onnx = str(export(Path(p["model_dir"]), Path(p["out"]) if p["out"] else None, p["overwrite"]))
    return {"onnx": onnx, "files": {Path(onnx).name: onnx}}


EXPORT = register(JobType(
    name="export", run=run_export, resource=CPU, check=_check_export,
    help="write the ONNX file of a model package (gfm export)",
    fields=(
        Field("model_dir", "model", required=True, help="model package folder"),
        Field("out", "out_file", help="default: MODEL_DIR/model.onnx"),
        Field("overwrite", "bool", default=False, help="replace an existing file at out"),
    ),
))


# ------------------------------------------------------------------------------ geopile
def _check_geopile(p: dict[str, Any]) -> None:
    from ..tasks.geopile import GeopileParams

    _geopile_params(p, GeopileParams)  # its own checks (chip size, bands...) before queueing


def _geopile_params(p: dict[str, Any], cls: Any) -> Any:
    return cls(src_folder=p["src_folder"], out=p["out"], chip=p["chip"], bands=p["bands"],
               dataset=p["dataset"], min_valid=p["min_valid"], blank_std=p["blank_std"],
               shard_chips=p["shard_chips"], workers=p["workers"])


def run_geopile(p: dict[str, Any], progress: Progress) -> dict[str, Any]:
    from ..tasks.geopile import GeopileParams, build_geopile

    return {"out": p["out"]} | build_geopile(_geopile_params(p, GeopileParams), progress)


GEOPILE = register(JobType(
    name="geopile", run=run_geopile, resource=CPU, check=_check_geopile,
    help="build or grow a GeoPile from a folder of imagery (gfm geopile build); submitting "
         "it again reads only new and changed files",
    fields=(
        Field("src_folder", "dir", required=True, help="folder of imagery"),
        Field("out", "out_dir", required=True, help="GeoPile folder to create or grow"),
        Field("chip", "int", default=192, minimum=32, maximum=2048, help="chip size in px"),
        Field("bands", "ints", minimum=1, maximum=MAX_BAND, help="1-based bands: R G B, or one for grey"),
        Field("dataset", "str", help="source dataset name (default: first folder below src_folder)"),
        Field("min_valid", "float", default=0.75, minimum=0, maximum=1),
        Field("blank_std", "float", default=2.0, minimum=0, maximum=255),
        Field("shard_chips", "int", default=1024, minimum=1, maximum=1_000_000),
        Field("workers", "int", default=0, minimum=0, maximum=64, help="reader threads (0: up to 4)"),
    ),
))


# ----------------------------------------------------------------------------- pretrain
def _check_pretrain(p: dict[str, Any]) -> None:
    from ..data.geopile_reader import GeoPile
    from .params import absolute_path

    try:
        GeoPile(p["pile_dir"])
    except InputError as exc:
        raise ParamError("pile_dir", str(exc)) from exc
    if p["teacher"] is not None and p["teacher"] != "none":
        path = absolute_path("teacher", p["teacher"])
        if not path.exists():
            raise ParamError("teacher", f"{path}: teacher checkpoint does not exist (or give 'none')")
        p["teacher"] = str(path)


def run_pretrain(p: dict[str, Any], progress: Progress) -> dict[str, Any]:
    from ..tasks.pretrain import PretrainParams, pretrain

    result = pretrain(PretrainParams(
        pile_dir=p["pile_dir"], out=p["out"], teacher=p["teacher"], config=p["config"],
        batch=p["batch"], epochs=p["epochs"], max_steps=p["max_steps"],
        warmup_epochs=p["warmup_epochs"], resume=p["resume"], device=p["device"],
        checkpoint_every=p["checkpoint_every"], log_every=p["log_every"], seed=p["seed"],
        attention=p["attention"], compile_blocks=p["compile_blocks"], overwrite=p["overwrite"]),
        progress)
    return {"out": p["out"], "files": _files(p["out"])} | result


PRETRAIN = register(JobType(
    name="pretrain", run=run_pretrain, resource=_device_resource, check=_check_pretrain,
    resumable=True, output=PRETRAIN_OUTPUT,
    help="GFM continual pretraining on a GeoPile (gfm pretrain); checkpoints as it goes, so an "
         "interrupted or cancelled run can be resumed (POST /jobs/{id}/resume)",
    fields=(
        Field("pile_dir", "dir", required=True, help="GeoPile folder"),
        Field("out", "out_dir", required=True, help="run folder"),
        Field("teacher", "str", help="ImageNet-22k Swin checkpoint (absolute path), or 'none'"),
        Field("config", "str", default="base", choices=("base", "tiny")),
        Field("batch", "int", default=128, minimum=1, maximum=65_536, help="images per step"),
        Field("epochs", "float", default=100, minimum=0, maximum=100_000),
        Field("max_steps", "int", minimum=1, maximum=10**9,
              help="stop after this many steps (instead of epochs)"),
        Field("warmup_epochs", "float", minimum=0, maximum=100_000,
              help="default: the first 10 % of the run"),
        Field("resume", "bool", default=False, help="continue the run in out exactly"),
        Field("device", "device", default="auto"),
        Field("checkpoint_every", "int", default=500, minimum=1, maximum=10**9,
              help="steps between checkpoints"),
        Field("log_every", "int", default=10, minimum=1, maximum=10**9),
        Field("seed", "int", default=0, minimum=0, maximum=MAX_SEED),
        Field("attention", "str", default="auto", choices=("auto", "eager", "sdpa"),
              help="window attention: sdpa is the fused path; auto picks it on CUDA"),
        Field("compile_blocks", "bool", default=False,
              help="torch.compile each Swin block (minutes of warm-up)"),
        Field("overwrite", "bool", default=False,
              help="start afresh over a previous run in out (deletes that run's files only)"),
    ),
))
