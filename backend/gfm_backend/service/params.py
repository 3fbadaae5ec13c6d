"""Job parameters: declared once per job type, checked before a job is queued.

A job's params use the CLI's names (`raster`, `model`, `out`, `max_steps`...). Checks
here catch what a user can fix at once (a missing file, an unreadable raster, an unknown
model or option) and name the field and the file; the task function still does its own
checks when it runs.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GfmError, InputError
from ..files import refuse_special

KINDS = ("str", "int", "float", "bool", "ints", "device", "raster", "rasters", "vector",
         "path", "dir", "model", "out_dir", "out_file")
PATH_KINDS = frozenset({"raster", "rasters", "vector", "path", "dir", "model", "out_dir", "out_file"})
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d{1,2})?)$")
_JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
               "ints": "array of integers", "rasters": "array of paths", "device": "string"}


class ParamError(GfmError):
    """A job parameter a user must fix; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.problem = field, message
        super().__init__(f"params.{field}: {message}")


@dataclass(frozen=True)
class Field:
    """One job parameter. `aliases` are other accepted names with the same meaning;
    `negation` is an accepted name meaning the opposite boolean (`polygons` for `no_polygons`)."""

    name: str
    kind: str
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    aliases: tuple[str, ...] = ()
    negation: str | None = None
    help: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown field kind {self.kind!r}; use one of {KINDS}")

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind,
                               "type": _JSON_TYPES.get(self.kind, "string (absolute path)"),
                               "required": self.required}
        if not self.required:
            out["default"] = self.default
        for key in ("choices", "minimum", "maximum", "aliases", "negation", "help"):
            value = getattr(self, key)
            if value not in ((), None, ""):
                out[key] = list(value) if isinstance(value, tuple) else value
        return out


ModelResolver = Callable[[str], "Path | None"]


def validate(fields: tuple[Field, ...], params: dict[str, Any], job_type: str,
             resolve_model: ModelResolver | None = None) -> dict[str, Any]:
    """Params with canonical names, defaults filled in and paths made absolute.

    Raises `ParamError` naming the first field that is wrong.
    """
    _check_text(params)
    by_name = {f.name: f for f in fields}
    alias_of = {a: f.name for f in fields for a in f.aliases}
    negation_of = {f.negation: f.name for f in fields if f.negation}
    given: dict[str, tuple[str, Any]] = {}
    for key, value in params.items():
        if key in by_name:
            name, v = key, value
        elif key in alias_of:
            name, v = alias_of[key], value
        elif key in negation_of:
            name = negation_of[key]
            v = (not value) if isinstance(value, bool) else value
            if not isinstance(value, bool):
                raise ParamError(key, f"must be true or false, got {_show(value)}")
        else:
            known = ", ".join(sorted(by_name))
            raise ParamError(key, f"unknown option for a {job_type} job; known options: {known}")
        if name in given:
            raise ParamError(key, f"given twice (as {given[name][0]!r} and {key!r}); give one")
        given[name] = (key, v)
    out: dict[str, Any] = {}
    for f in fields:
        if f.name not in given or (given[f.name][1] is None and not f.required):
            if f.required:
                raise ParamError(f.name, f"missing; a {job_type} job needs it")
            out[f.name] = f.default
            continue
        out[f.name] = check_value(f, given[f.name][1], resolve_model)
    return out


def _check_text(value: Any, where: str = "") -> None:
    """Every string must be valid Unicode: a lone surrogate (how a Latin-1 file name reaches
    Python) cannot be stored or answered as JSON, so it is refused here, not stored."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ParamError(where or "params", f"{_show(value)} is not valid UTF-8 text (a file "
                             "name in another encoding?); rename the file or give its UTF-8 "
                             "name") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k, where)
            _check_text(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for v in value:
            _check_text(v, where)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_value(f: Field, value: Any, resolve_model: ModelResolver | None = None) -> Any:
    """One field's value, normalised (paths absolute), or a `ParamError`."""
    if f.kind == "bool":
        if not isinstance(value, bool):
            raise ParamError(f.name, f"must be true or false, got {_show(value)}")
        return value
    if f.kind in ("int", "float"):
        return _number(f, value)
    if f.kind == "ints":
        items = value if isinstance(value, list) else [value]
        if not items:
            raise ParamError(f.name, "give at least one value")
        return [_number(Field(f.name, "int", minimum=f.minimum, maximum=f.maximum), v) for v in items]
    if f.kind in ("str", "device"):
        if not isinstance(value, str):
            raise ParamError(f.name, f"must be a string, got {_show(value)}")
        if f.choices and value not in f.choices:
            raise ParamError(f.name, f"must be one of {', '.join(map(str, f.choices))}, "
                             f"got {_show(value)}")
        if f.kind == "device" and not _DEVICE.match(value):
            raise ParamError(f.name, f"must be auto, cpu, cuda or cuda:N, got {_show(value)}")
        return value
    if f.kind == "rasters":
        items = value if isinstance(value, list) else [value]
        if not items:
            raise ParamError(f.name, "give at least one raster")
        return [check_value(Field(f.name, "raster"), v) for v in items]
    if f.kind == "model":
        return _model(f, value, resolve_model)
    return str(_path(f, value))


def _number(f: Field, value: Any) -> int | float:
    ok = isinstance(value, int) if f.kind == "int" else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or (isinstance(value, float) and not math.isfinite(value)):
        what = "an integer" if f.kind == "int" else "a number"
        raise ParamError(f.name, f"must be {what}, got {_show(value)}")
    if f.minimum is not None and value < f.minimum:
        raise ParamError(f.name, f"must be at least {f.minimum:g}, got {value}")
    if f.maximum is not None and value > f.maximum:
        raise ParamError(f.name, f"must be at most {f.maximum:g}, got {_show(value)}")
    return value


def absolute_path(field: str, value: Any) -> Path:
    """A usable absolute path; the service does not share the caller's working directory."""
    if not isinstance(value, str) or not value.strip():
        raise ParamError(field, f"must be a path (a non-empty string), got {_show(value)}")
    if "\x00" in value:
        raise ParamError(field, "a path cannot contain a NUL character")
    if value.startswith("~"):
        raise ParamError(field, f"give an absolute path ({value!r} starts with ~, which only a "
                         "shell expands)")
    path = Path(value)
    if not path.is_absolute():
        raise ParamError(field, f"give an absolute path ({value!r} is relative, and the service "
                         "does not share your working directory)")
    try:
        path.exists()
    except (OSError, ValueError) as exc:
        raise ParamError(field, f"{value}: not a usable path ({exc})") from exc
    return path


def _path(f: Field, value: Any) -> Path:
    path = absolute_path(f.name, value)
    try:
        refuse_special(path)
        if f.kind == "raster":
            from ..data.raster import open_raster  # rasterio only when a raster is named

            try:
                with open_raster(path):
                    pass
            except InputError:
                raise
            except Exception as exc:  # any GDAL failure means the same thing to the user
                raise InputError(path, f"not a raster GDAL can read ({exc})") from exc
        elif f.kind == "vector":
            _check_vector(path)
        elif f.kind == "path" and not path.exists():
            raise InputError(path, "does not exist")
        elif f.kind == "dir" and not path.is_dir():
            raise InputError(path, "folder does not exist" if not path.exists() else "is not a folder")
        elif f.kind in ("out_dir", "out_file"):
            _check_writable(path, want_dir=f.kind == "out_dir")
    except InputError as exc:
        raise ParamError(f.name, str(exc)) from exc
    except OSError as exc:
        raise ParamError(f.name, f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return path


def _check_vector(path: Path) -> None:
    import pyogrio

    if not path.exists():
        raise InputError(path, "label file does not exist")
    try:
        pyogrio.read_info(str(path))
    except Exception as exc:  # pyogrio raises DataSourceError and others
        raise InputError(path, f"not a vector file GDAL can read ({exc})") from exc


def vector_fields(path: str) -> list[str]:
    import pyogrio

    return [str(f) for f in pyogrio.read_info(path)["fields"]]


def _check_writable(path: Path, want_dir: bool) -> None:
    if path.exists():
        if want_dir and not path.is_dir():
            raise InputError(path, "exists and is not a folder; choose another output folder")
        if not want_dir and path.is_dir():
            raise InputError(path, "is a folder; give a file name")
    parent = path if want_dir and path.is_dir() else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(path, f"cannot be written: {parent} is not a writable folder")


def _model(f: Field, value: Any, resolve_model: ModelResolver | None) -> str:
    from ..package import read_spec

    if isinstance(value, str) and value and "/" not in value and "\\" not in value \
            and not value.startswith(("~", ".")):
        found = resolve_model(value) if resolve_model else None
        if found is None:
            raise ParamError(f.name, f"unknown model {value!r}: give a model package folder "
                             "(absolute path) or a name that GET /models lists")
        return str(found)
    path = absolute_path(f.name, value)
    try:
        read_spec(path)
    except InputError as exc:
        raise ParamError(f.name, str(exc)) from exc
    except OSError as exc:
        raise ParamError(f.name, f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return str(path)
