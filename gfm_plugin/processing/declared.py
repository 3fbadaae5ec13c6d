"""Processing parameters made from the backend's job declarations (`job_params.json`).

The plugin never imports the backend, so `make job-params` writes the job types' params
(names, kinds, defaults, bounds, choices, help) beside this module and a backend test keeps
the file in step with the parameter models. Each backend param becomes one Processing
parameter named in upper case (`raster` is `INPUT` and `out` is `OUTPUT`, as QGIS users
expect); what an algorithm needs beyond that (a layer turned into a file, a class field
tied to its layer) it says itself.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
)

DECLARATIONS = Path(__file__).with_name("job_params.json")
# the backend's models, offered by the `model` params (set when the plugin lists them):
# per job type, the models of the task it runs
KNOWN_MODELS: dict[str, list[str]] = {}
CHANGE_TASK = "change_detection"
TASK_OF_JOB = {"detect-change": CHANGE_TASK}  # any other job reading a model: not a change one
FOLDER_SUFFIX = "_FOLDER"
DEVICES = ["auto", "cpu", "cuda"]
RENAMED = {"raster": "INPUT", "out": "OUTPUT"}


@lru_cache(maxsize=1)
def declarations() -> dict[str, Any]:
    return json.loads(DECLARATIONS.read_text(encoding="utf-8"))


def params_of(job_type: str) -> list[dict[str, Any]]:
    return declarations()["types"][job_type]


def processing_name(param: str) -> str:
    return RENAMED.get(param, param.upper())


def label(spec: dict[str, Any]) -> str:
    if spec.get("title"):
        return spec["title"]
    words = spec["name"].replace("_", " ")
    return words[:1].upper() + words[1:]


def definition(spec: dict[str, Any], main: frozenset[str],
               job_type: str = "") -> QgsProcessingParameterDefinition:
    """The Processing parameter for one declared param; those not in `main` are advanced."""
    param = _make(spec, KNOWN_MODELS.get(job_type, []))
    if spec.get("help"):
        param.setHelp(spec["help"])
    if spec["name"] not in main and not spec["required"]:
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
    return param


def _make(spec: dict[str, Any], models: list[str]) -> QgsProcessingParameterDefinition:
    name, kind, text = processing_name(spec["name"]), spec["kind"], label(spec)
    optional = not spec["required"]
    if spec["name"] == "class_field":
        return QgsProcessingParameterField(name, text, parentLayerParameterName="LABELS",
                                           optional=True)
    if spec["name"] == "device":
        return QgsProcessingParameterEnum(name, text, DEVICES, defaultValue=0)
    if kind in ("int", "float"):
        return _number(spec, name, text)
    if kind == "bool":
        return QgsProcessingParameterBoolean(name, text, defaultValue=bool(spec.get("default")))
    if spec.get("choices"):
        return QgsProcessingParameterEnum(name, text, [str(c) for c in spec["choices"]],
                                          defaultValue=spec["choices"].index(spec["default"]))
    folder = QgsProcessingParameterFile.Behavior.Folder
    makers = {
        "raster": lambda: QgsProcessingParameterRasterLayer(name, text, optional=optional),
        "rasters": lambda: QgsProcessingParameterMultipleLayers(
            name, text, QgsProcessing.SourceType.TypeRaster, optional=optional),
        "vector": lambda: QgsProcessingParameterVectorLayer(
            name, text, [QgsProcessing.SourceType.TypeVectorPolygon], optional=optional),
        "model": lambda: _model(name, text, optional, models),
        "dir": lambda: QgsProcessingParameterFile(name, text, behavior=folder, optional=optional),
        "path": lambda: QgsProcessingParameterFile(name, text, optional=optional),
        "out_dir": lambda: QgsProcessingParameterFolderDestination(name, text, optional=optional),
        "out_file": lambda: QgsProcessingParameterFileDestination(
            name, text, _file_filter(spec.get("suffix", "")), optional=optional),
    }
    if kind in makers:
        return makers[kind]()
    if spec.get("path_text"):
        return QgsProcessingParameterFile(name, text, optional=optional)
    hint = " (numbers separated by spaces)" if kind == "ints" else ""
    return QgsProcessingParameterString(name, text + hint, defaultValue=spec.get("default"),
                                        optional=optional)


FILE_TYPES = {".gpkg": "GeoPackage", ".onnx": "ONNX model"}


def _file_filter(suffix: str) -> str:
    """A file dialog's filter for an output's extension (its first entry is what
    Processing gives a temporary output)."""
    if not suffix:
        return ""
    return f"{FILE_TYPES.get(suffix, suffix[1:].upper())} (*{suffix})"


def model_choices(models: list[dict]) -> dict[str, list[str]]:
    """Per job type reading a model, what its `model` param may name for each listed
    package of its task: the package's name when it lies in the backend's models folder
    (names resolve there), else its path on the backend."""
    names = [str(m.get("name")) for m in models]
    out: dict[str, list[str]] = {"classify": [], "detect-change": []}
    for m in models:
        if not m.get("path"):
            continue
        choice = (str(m["name"]) if str(m.get("source", "")).startswith("models folder")
                  and names.count(m["name"]) == 1 else str(m["path"]))
        task = (m.get("model") or {}).get("task")
        out["detect-change" if task == CHANGE_TASK else "classify"].append(choice)
    out["suggest"] = list(out["classify"])  # what a classify model maps, suggest reads
    return out


def _model(name: str, text: str, optional: bool, models: list[str]) -> QgsProcessingParameterDefinition:
    """The backend's models to pick from when they are known, else a folder."""
    if not models:
        return QgsProcessingParameterFile(name, text, behavior=QgsProcessingParameterFile.Behavior.Folder,
                                          optional=optional)
    param = QgsProcessingParameterString(name, text, defaultValue=models[0], optional=optional)
    param.setMetadata({"widget_wrapper": {"value_hints": list(models)}})
    return param


def model_folder(spec: dict[str, Any], job_type: str = "") -> QgsProcessingParameterDefinition | None:
    """Beside a list of the backend's models: any package folder instead (advanced)."""
    if spec["kind"] != "model" or not KNOWN_MODELS.get(job_type):
        return None
    param = QgsProcessingParameterFile(processing_name(spec["name"]) + FOLDER_SUFFIX,
                                       f"{label(spec)} folder (instead of a listed model)",
                                       behavior=QgsProcessingParameterFile.Behavior.Folder,
                                       optional=True)
    param.setFlags(param.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
    return param


def _number(spec: dict[str, Any], name: str, text: str) -> QgsProcessingParameterNumber:
    integer = spec["kind"] == "int"
    number_type = (QgsProcessingParameterNumber.Type.Integer if integer
                   else QgsProcessingParameterNumber.Type.Double)
    param = QgsProcessingParameterNumber(name, text, number_type, spec.get("default"),
                                         optional=spec.get("default") is None)
    if spec.get("minimum") is not None:
        param.setMinimum(spec["minimum"])
    if spec.get("maximum") is not None:
        param.setMaximum(spec["maximum"])
    return param


def value(alg, spec: dict[str, Any], parameters: dict, context) -> Any:
    """A plain declared param's value as the backend takes it (None: not given)."""
    name, kind = processing_name(spec["name"]), spec["kind"]
    if parameters.get(name) is None and not spec["required"]:
        return None
    if spec["name"] == "device":
        return DEVICES[alg.parameterAsEnum(parameters, name, context)]
    if kind == "int":
        return alg.parameterAsInt(parameters, name, context)
    if kind == "float":
        return alg.parameterAsDouble(parameters, name, context)
    if kind == "bool":
        return alg.parameterAsBool(parameters, name, context)
    if spec.get("choices"):
        return spec["choices"][alg.parameterAsEnum(parameters, name, context)]
    if kind in ("out_dir", "out_file"):  # resolves a temporary output to a real path
        return alg.parameterAsFileOutput(parameters, name, context) or None
    if kind == "model":
        folder = alg.parameterAsFile(parameters, name + FOLDER_SUFFIX, context) \
            if parameters.get(name + FOLDER_SUFFIX) else ""
        return folder or alg.parameterAsString(parameters, name, context) or None
    if kind in ("dir", "path") or spec.get("path_text"):
        return alg.parameterAsFile(parameters, name, context) or None
    text = alg.parameterAsString(parameters, name, context)
    if kind == "ints":
        return [int(v) for v in text.replace(",", " ").split()] or None
    return text or None
