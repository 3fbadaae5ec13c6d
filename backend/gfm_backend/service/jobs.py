"""The job types the service runs: one registry entry per type.

An entry names the job's parameter model (`tasks/params.py`: names, types, defaults,
bounds, help; the command line and the plugin take theirs from the same model), the
function that runs it (the task function the CLI calls, and the summary the job's
`outputs` show), which resource it needs (`gpu`: the one heavy lane, one job at a time by
default; `cpu`: beside it), the kind of output folder it writes and whether it can be
resumed. Adding a type is one `register(JobType(...))`; modules named in
`$GFM_SERVICE_PLUGINS` (comma-separated) are imported at startup by the server and its
workers, so extra types can be plugged in without touching this file.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from .. import __version__
from ..errors import GfmError, InputError
from ..outputs import CHANGE as CHANGE_OUTPUT
from ..outputs import CLASSIFY as CLASSIFY_OUTPUT
from ..outputs import MODEL as MODEL_OUTPUT
from ..outputs import PRETRAIN as PRETRAIN_OUTPUT
from ..outputs import FolderBusy, OutputKind, check_output_dir
from ..parameters import (
    INPUT_KINDS,
    JobParams,
    ParamConflict,
    ParamError,
    describe_field,
    keywords_of,
    path_fields,
    public_model,
)
from ..progress import Progress
from ..tasks.params import (
    ClassifyParams,
    DetectChangeParams,
    ExportParams,
    FinetuneChangeParams,
    FinetuneParams,
    GeopileParams,
    PretrainParams,
    SuggestParams,
    WeightsGetParams,
    WeightsImportParams,
)
from .params import Resolvers, validate, vector_fields
from .split import Extent, classify_extent

GPU, CPU = "gpu", "cpu"
RESOURCES = (GPU, CPU)
PLUGINS_ENV = "GFM_SERVICE_PLUGINS"

RunFn = Callable[[Any, Progress], dict[str, Any]]
CheckFn = Callable[[dict[str, Any]], None]


class JobTypeError(GfmError):
    """An unknown job type, or one this version cannot run yet."""


@dataclass(frozen=True)
class JobType:
    """A kind of job. `run(params_model, progress) -> outputs` runs in a worker process and
    must be importable there (a module-level function); `check` does cross-field checks
    before queueing; `resource` is `gpu`, `cpu` or a function of the params."""

    name: str
    params: type[JobParams]
    run: RunFn
    resource: str | Callable[[dict[str, Any]], str] = GPU
    resumable: bool = False
    check: CheckFn | None = None
    help: str = ""
    output: OutputKind | None = None  # the kind of folder `out` is (the output-folder rule)
    # a type that can run as ranks over several GPUs (torch.distributed) says how large a
    # job is, for the service's rule on splitting it (`split.py`)
    extent: Callable[[dict[str, Any]], Extent | None] | None = None

    def __post_init__(self) -> None:
        if self.resumable and "resume" not in self.params.model_fields:
            raise ValueError(f"resumable job type {self.name!r} needs a 'resume' bool field")

    def validate(self, params: Any, resolvers: Resolvers | None = None) -> dict[str, Any]:
        """Checked params as JSON values with canonical names (what the store keeps)."""
        clean = validate(self.params, params, resolvers)
        if self.output is not None:  # first: what may not be written matters most
            self._check_output(clean)
        if self.check is not None:
            self.check(clean)
        return clean

    def model(self, params: dict[str, Any]) -> JobParams:
        """The parameter model of stored, already checked params (in the worker)."""
        return self.params.checked(params)

    def _check_output(self, p: dict[str, Any]) -> None:
        """The output-folder rule, before queueing: a 400 naming the folder, not a failed job."""
        inputs: dict[str, Any] = {}
        for name, kind in path_fields(self.params).items():
            if kind in INPUT_KINDS and p.get(name) is not None \
                    and p[name] not in keywords_of(self.params, name):
                values = p[name] if isinstance(p[name], list) else [p[name]]
                inputs |= {f"{name} {v}" if len(values) > 1 else name: v for v in values}
        assert self.output is not None
        try:
            check_output_dir(p["out"], self.output, bool(p.get("overwrite")), inputs,
                             continuing=bool(p.get("resume")))
        except FolderBusy as exc:
            raise ParamConflict("out", str(exc)) from exc
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
                "params": [describe_field(n, f) for n, f in self.params.exposed().items()],
                "schema": public_model(self.params).model_json_schema()}


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


BUILT_IN = ("classify", "finetune", "export", "geopile", "pretrain", "weights", "weights-import",
            "finetune-change", "detect-change", "suggest")


def plugin_declarations() -> dict[str, Any]:
    """The built-in job types' params as the QGIS plugin reads them (it cannot import the
    backend): written to `gfm_plugin/processing/job_params.json` by `make job-params`, and
    a test keeps that file in step with the models."""
    return {"version": __version__,
            "types": {name: get_job_type(name).describe()["params"] for name in BUILT_IN}}


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


def _files(folder: Path | str) -> dict[str, str]:
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
    _check_tiles(p, spec)


def _check_tiles(p: dict[str, Any], spec: Any) -> None:
    """The tiles can run (window grid, overlap), and the runtime's ONNX file is there."""
    from ..runtime.predictors import ONNX_FILES

    try:
        spec.for_inference(p.get("tile_size"), p.get("tile_overlap"))
    except ValueError as exc:
        raise ParamError("tile_size" if "overlap" not in str(exc) else "tile_overlap",
                         str(exc)) from exc
    name = ONNX_FILES.get(p["runtime"])
    if name and not (Path(p["model"]) / name).is_file():
        raise ParamError("runtime", f"{p['model']} has no {name}; use runtime 'torch' or "
                         f"export the model first (an export job{', int8' if 'int8' in name else ''})")


def run_classify(params: ClassifyParams, progress: Progress) -> dict[str, Any]:
    from ..tasks.classify import classify, summary

    return {"out": str(params.out)} | summary(classify(params, progress))


CLASSIFY = register(JobType(
    name="classify", params=ClassifyParams, run=run_classify, resource=_device_resource,
    check=_check_classify, output=CLASSIFY_OUTPUT, extent=classify_extent,
    help="classify a raster with a model package (gfm classify); a large one may be split "
         "over the service's free GPUs"))


# ----------------------------------------------------------------------------- finetune
def _check_class_field(p: dict[str, Any]) -> None:
    if p["class_field"] is not None:
        fields = vector_fields(p["labels"])
        if p["class_field"] not in fields:
            raise ParamError("class_field", f"{p['labels']} has no field {p['class_field']!r}; "
                             f"fields are: {', '.join(fields) or '(none)'}")


def _check_finetune(p: dict[str, Any]) -> None:
    from ..data.raster import open_raster

    _check_class_field(p)
    for raster in p["rasters"] if p["bands"] else ():
        with open_raster(raster) as ds:
            bad = [b for b in p["bands"] if b > ds.count]
            if bad:
                raise ParamError("bands", f"{raster} has {ds.count} band(s); no band {bad[0]}")


def run_finetune(params: FinetuneParams, progress: Progress) -> dict[str, Any]:
    from ..tasks.finetune import finetune, summary

    report = finetune(params, progress)
    return {"out": str(params.out), "files": _files(params.out)} | summary(report)


FINETUNE = register(JobType(
    name="finetune", params=FinetuneParams, run=run_finetune, resource=_device_resource,
    check=_check_finetune, output=MODEL_OUTPUT,
    help="train a model package on polygons drawn over rasters (gfm finetune)"))


# ------------------------------------------------------------------ change detection
def _check_pair(p: dict[str, Any], bands: list[int]) -> None:
    """The two dates overlap and AFTER has the bands: a 400 before queueing."""
    from ..data.pair import open_pair

    try:
        with open_pair(p["before"], p["after"], bands, p.get("after_bands")):
            pass
    except InputError as exc:
        field = "after_bands" if "band" in str(exc) and p.get("after_bands") else "after"
        raise ParamError(field, str(exc)) from exc


def _check_detect_change(p: dict[str, Any]) -> None:
    from ..package import read_change_spec

    try:
        spec = read_change_spec(Path(p["model"]))
    except InputError as exc:
        raise ParamError("model", str(exc)) from exc
    _check_pair(p, spec.bands)
    _check_tiles(p, spec)


def run_detect_change(params: DetectChangeParams, progress: Progress) -> dict[str, Any]:
    from ..tasks.change_detect import detect_change, summary

    return {"out": str(params.out)} | summary(detect_change(params, progress))


DETECT_CHANGE = register(JobType(
    name="detect-change", params=DetectChangeParams, run=run_detect_change,
    resource=_device_resource, check=_check_detect_change, output=CHANGE_OUTPUT,
    help="map what changed between two dates with a change model (gfm detect-change)"))


def _check_finetune_change(p: dict[str, Any]) -> None:
    from ..data.raster import default_bands, open_raster

    _check_class_field(p)
    with open_raster(p["before"]) as ds:
        bands = p["bands"] or default_bands(ds)
        if max(bands) > ds.count:
            raise ParamError("bands", f"{p['before']} has {ds.count} band(s); no band {max(bands)}")
    _check_pair(p, bands)


def run_finetune_change(params: FinetuneChangeParams, progress: Progress) -> dict[str, Any]:
    from ..tasks.change_finetune import finetune_change
    from ..tasks.finetune import summary

    report = finetune_change(params, progress)
    return ({"out": str(params.out), "files": _files(params.out)} | summary(report)
            | {"change": report["validation"].get("change")})


FINETUNE_CHANGE = register(JobType(
    name="finetune-change", params=FinetuneChangeParams, run=run_finetune_change,
    resource=_device_resource, check=_check_finetune_change, output=MODEL_OUTPUT,
    help="train a change model on polygons drawn where something changed between two dates "
         "(gfm finetune-change)"))


# ------------------------------------------------------------------------------ suggest
def _check_suggest(p: dict[str, Any]) -> None:
    from ..package import read_spec
    from ..tasks.output_file import check_output_file

    if read_spec(Path(p["model"])).task != "segmentation":
        raise ParamError("model", f"{p['model']} is not a segmentation model; suggestions "
                         "come from a model that maps classes pixel by pixel")
    _check_classify(p)
    try:
        check_output_file(Path(p["out"]), ".gpkg", p["overwrite"],
                          {"raster": p["raster"], "labels": p["labels"]},
                          inside_not=Path(p["model"]))
    except InputError as exc:
        raise ParamError("out", str(exc)) from exc


def run_suggest(params: SuggestParams, progress: Progress) -> dict[str, Any]:
    from ..tasks.suggest import suggest

    report = suggest(params, progress)
    return report | {"files": {Path(report["out"]).name: report["out"]}}


SUGGEST = register(JobType(
    name="suggest", params=SuggestParams, run=run_suggest, resource=_device_resource,
    check=_check_suggest,
    help="propose places to draw the next training polygons (gfm suggest)"))


# ------------------------------------------------------------------------------- export
def _check_export(p: dict[str, Any]) -> None:
    from ..tasks.export_paths import export_target

    try:
        export_target(Path(p["model_dir"]), Path(p["out"]) if p["out"] else None, p["overwrite"])
    except InputError as exc:
        raise ParamError("out", str(exc)) from exc


def run_export(params: ExportParams, progress: Progress) -> dict[str, Any]:
    from ..tasks.export import run_export as export
    from ..tasks.export_paths import int8_path

    progress(0.0, "exporting to ONNX")
    onnx = export(params)
    written = [onnx] + ([int8_path(onnx)] if params.int8 else [])
    return {"onnx": str(onnx), "files": {p.name: str(p) for p in written}}


EXPORT = register(JobType(
    name="export", params=ExportParams, run=run_export, resource=CPU, check=_check_export,
    help="write the ONNX file of a model package (gfm export)"))


# ------------------------------------------------------------------------------ geopile
def run_geopile(params: GeopileParams, progress: Progress) -> dict[str, Any]:
    from ..tasks.geopile import build_geopile

    return {"out": str(params.out)} | build_geopile(params, progress)


GEOPILE = register(JobType(
    name="geopile", params=GeopileParams, run=run_geopile, resource=CPU,
    help="build or grow a GeoPile from a folder of imagery (gfm geopile build); submitting "
         "it again reads only new and changed files"))


# ----------------------------------------------------------------------------- pretrain
def _check_pretrain(p: dict[str, Any]) -> None:
    from ..data.geopile_reader import GeoPile

    try:
        GeoPile(p["pile_dir"])
    except InputError as exc:
        raise ParamError("pile_dir", str(exc)) from exc


def run_pretrain(params: PretrainParams, progress: Progress) -> dict[str, Any]:
    from ..tasks.pretrain import pretrain

    result = pretrain(params, progress)
    return {"out": str(params.out), "files": _files(params.out)} | result


PRETRAIN = register(JobType(
    name="pretrain", params=PretrainParams, run=run_pretrain, resource=_device_resource,
    check=_check_pretrain, resumable=True, output=PRETRAIN_OUTPUT,
    help="GFM continual pretraining on a GeoPile (gfm pretrain); checkpoints as it goes, so an "
         "interrupted or cancelled run can be resumed (POST /jobs/{id}/resume)"))


# ------------------------------------------------------------------------------ weights
def _check_weights(p: dict[str, Any]) -> None:
    """What can be known before downloading: a catalog name or an address, a usable name."""
    from ..tasks.weights import weights_source
    from ..weights.store import check_name

    try:
        name, _, _, _ = weights_source(cast(WeightsGetParams, WeightsGetParams.checked(p)))
    except GfmError as exc:
        raise ParamError("mirror" if p.get("mirror") else "source", str(exc)) from exc
    try:
        check_name(name)
    except GfmError as exc:
        raise ParamError("name", str(exc)) from exc


def _check_weights_import(p: dict[str, Any]) -> None:
    from ..weights.store import check_name

    if p.get("name"):
        try:
            check_name(p["name"])
        except GfmError as exc:
            raise ParamError("name", str(exc)) from exc


def run_weights(params: WeightsGetParams, progress: Progress) -> dict[str, Any]:
    from ..tasks.weights import get_weights

    return get_weights(params, progress)


WEIGHTS = register(JobType(
    name="weights", params=WeightsGetParams, run=run_weights, resource=CPU, check=_check_weights,
    help="download encoder weights into the backend's store (gfm weights get); a broken "
         "download resumes when submitted again"))


def run_weights_import(params: WeightsImportParams, progress: Progress) -> dict[str, Any]:
    from ..tasks.weights import import_weights

    return import_weights(params, progress)


WEIGHTS_IMPORT = register(JobType(
    name="weights-import", params=WeightsImportParams, run=run_weights_import, resource=CPU,
    check=_check_weights_import,
    help="copy a downloaded checkpoint (gfm.pth, ...) into the backend's store (gfm weights import)"))
