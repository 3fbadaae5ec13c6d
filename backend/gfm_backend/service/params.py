"""Checks of a job's params before it is queued, beyond their types and bounds.

Types, bounds, choices and names come from the job's parameter model (`parameters`);
here: every string valid UTF-8, and every path field what its `Kind` says (absolute, a
regular file or folder, a raster GDAL opens, a model package or a name `GET /models`
lists, weights or a name `GET /weights` lists, a writable output). Messages name the
field and the file.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import refuse_special
from ..parameters import JobParams, ParamError, dumped, keywords_of, path_fields, show

ModelResolver = Callable[[str], "Path | None"]


@dataclass(frozen=True)
class Resolvers:
    """How names become paths: model names (`GET /models`) and weights names (`GET /weights`;
    by default the store of `$GFM_STATE_DIR`, as the command line has it)."""

    find_model: ModelResolver | None = None
    find_weights: ModelResolver | None = None
    find_upload: Callable[[str], Path] | None = None  # an uploaded file's id -> its path
    new_output: Callable[[str], Path] | None = None  # a name -> a new folder the service picks
    allowed: tuple[Path, ...] | None = None  # with --data-root: the only folders jobs may use

    def weights(self, name: str) -> Path | None:
        if self.find_weights is not None:
            return self.find_weights(name)
        from ..weights.store import WeightsStore

        return WeightsStore.default().find(name)


def validate(cls: type[JobParams], params: Any, resolvers: Resolvers | None = None
             ) -> dict[str, Any]:
    """Params with canonical names, defaults filled in and paths checked and absolute.

    Raises `ParamError` naming the first field that is wrong.
    """
    if not isinstance(params, dict):
        raise ParamError("params", f"must be an object of named options, got {show(params)}")
    _check_text(params)
    unknown = sorted(set(params) - _accepted(cls))
    if unknown:
        known = ", ".join(sorted(cls.exposed()))
        raise ParamError(unknown[0], f"unknown option for a {cls.job} job; known options: {known}")
    resolvers = resolvers or Resolvers()
    params = {k: _service_value(k, v, resolvers) for k, v in params.items()}
    for key in _raster_names(cls) & set(params):  # before the model makes URLs into Paths
        value = params[key]
        params[key] = [gdal_url(v) for v in value] if isinstance(value, list) else gdal_url(value)
    clean = dumped(cls.checked(params))
    for name, kind in path_fields(cls).items():
        value = clean.get(name)
        if value is not None and value not in keywords_of(cls, name):
            clean[name] = check_path(name, kind, value, resolvers)
            if not _service_name(kind, params.get(name)):  # a name the service resolved is its own
                _inside_allowed(name, clean[name], resolvers.allowed)
    return {k: v for k, v in clean.items() if k in cls.exposed()}


def _service_value(field: str, value: Any, resolvers: Resolvers) -> Any:
    """What a client without the server's disk names: `{"file": ID}` (alone or in a list)
    an uploaded file, `{"output": NAME}` a new output folder the service picks."""
    if isinstance(value, list):
        return [_service_value(field, v, resolvers) for v in value]
    if isinstance(value, dict) and set(value) == {"output"}:
        if resolvers.new_output is None or not isinstance(value["output"], str):
            raise ParamError(field, "{\"output\": NAME} names a new output folder by a short name")
        return str(resolvers.new_output(value["output"]))
    if not (isinstance(value, dict) and set(value) == {"file"}):
        return value
    from .uploads import UploadError

    if resolvers.find_upload is None or not isinstance(value["file"], str):
        raise ParamError(field, "uploaded files ({\"file\": ID}) are named by the id POST /files "
                         "answered")
    try:
        return str(resolvers.find_upload(value["file"]))
    except UploadError as exc:
        raise ParamError(field, str(exc)) from exc


OBJECT_STORES = {"s3://": "/vsis3/", "gs://": "/vsigs/"}
NETWORK = ("/vsicurl?", "/vsis3/", "/vsigs/")


def gdal_url(value: Any) -> Any:
    """Imagery that need not travel: an http(s):// COG read through GDAL's /vsicurl/ (window
    by window, with HTTP range requests), s3:// and gs:// where the server has credentials.
    The URL goes in `/vsicurl?url=` percent-encoded: a path keeps no `//`."""
    if not isinstance(value, str):
        return value
    if value.startswith(("https://", "http://")):
        return "/vsicurl?url=" + urllib.parse.quote(value, safe="")
    for prefix, vsi in OBJECT_STORES.items():
        if value.startswith(prefix):
            return vsi + value[len(prefix):]
    return value


def _is_network(path: str) -> bool:
    return path.startswith(NETWORK)


def _service_name(kind: str, value: Any) -> bool:
    return kind in ("model", "weights") and isinstance(value, str) and "/" not in value \
        and "\\" not in value


def _inside_allowed(field: str, value: Any, allowed: tuple[Path, ...] | None) -> None:
    """With a data root, a job reads and writes only there (and in the service's own
    uploads, outputs, models and weights): a remote user cannot name /etc or a colleague's
    home. Links and `..` are resolved first, so neither leads out."""
    if allowed is None:
        return
    for item in value if isinstance(value, list) else [value]:
        if _is_network(str(item)):
            continue  # read over the network, not from this machine's disk
        real = Path(os.path.realpath(str(item)))
        if not any(real == root or root in real.parents for root in allowed):
            raise ParamError(field, f"{item} lies outside the folders this service lets jobs use "
                             f"({allowed[0]}, given to gfm serve as --data-root, and the service's "
                             "uploads and outputs); upload the file (POST /files) or put it there")


def _raster_names(cls: type[JobParams]) -> set[str]:
    """The names (aliases included) under which a job takes rasters."""
    from ..parameters import cli_of

    names: set[str] = set()
    for name, kind in path_fields(cls).items():
        if kind in ("raster", "rasters"):
            names |= {name, *cli_of(cls.exposed()[name]).aliases}
    return names


def _accepted(cls: type[JobParams]) -> set[str]:
    from ..parameters import cli_of

    names: set[str] = set()
    for name, info in cls.exposed().items():
        cli = cli_of(info)
        names |= {name, *cli.aliases, *([cli.negation] if cli.negation else [])}
    return names


def check_path(name: str, kind: str, value: Any, resolvers: Resolvers) -> Any:
    """One path field's value, checked as its kind says; lists item by item."""
    if kind == "rasters":
        return [_raster(name, str(v)) for v in value]
    if kind == "raster":
        return _raster(name, str(value))
    if kind == "model":
        return _model(name, value, resolvers.find_model)
    if kind == "weights":
        return _weights(name, value, resolvers)
    return str(_path(name, kind, value))


def _raster(name: str, value: str) -> str:
    """A raster file, or one GDAL reads over the network (kept as given: no Path, which
    would fold the URL's `//`)."""
    if not _is_network(value):
        return str(_path(name, "raster", value))
    from ..data.raster import open_raster

    try:
        with open_raster(value):
            pass
    except Exception as exc:  # any GDAL failure means the same thing to the user
        raise ParamError(name, f"{urllib.parse.unquote(value)}: not a raster GDAL can read "
                         f"over the network ({exc})") from exc
    return value


def _weights(name: str, value: Any, resolvers: Resolvers) -> str:
    """Installed weights by name, else a file or model package folder that exists."""
    from ..weights.store import looks_like_name

    if isinstance(value, str) and looks_like_name(value) and not os.path.isabs(value):
        found = resolvers.weights(value)
        if found is None:
            raise ParamError(name, f"unknown weights {value!r}: give a checkpoint file (absolute "
                             "path) or a name that gfm weights list (GET /weights) shows; "
                             f"fetch published ones with gfm weights get {value}")
        return str(found)
    return str(_path(name, "path", value))


def _check_text(value: Any, where: str = "") -> None:
    """Every string must be valid Unicode: a lone surrogate (how a Latin-1 file name reaches
    Python) cannot be stored or answered as JSON, so it is refused here, not stored."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ParamError(where or "params", f"{show(value)} is not valid UTF-8 text (a file "
                             "name in another encoding?); rename the file or give its UTF-8 "
                             "name") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k, where)
            _check_text(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for v in value:
            _check_text(v, where)


def absolute_path(field: str, value: Any) -> Path:
    """A usable absolute path; the service does not share the caller's working directory."""
    if not isinstance(value, str) or not value.strip():
        raise ParamError(field, f"must be a path (a non-empty string), got {show(value)}")
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


def _path(name: str, kind: str, value: Any) -> Path:
    path = absolute_path(name, value)
    try:
        refuse_special(path)
        if kind == "raster":
            from ..data.raster import open_raster  # rasterio only when a raster is named

            try:
                with open_raster(path):
                    pass
            except InputError:
                raise
            except Exception as exc:  # any GDAL failure means the same thing to the user
                raise InputError(path, f"not a raster GDAL can read ({exc})") from exc
        elif kind == "vector":
            _check_vector(path)
        elif kind == "path" and not path.exists():
            raise InputError(path, "does not exist")
        elif kind == "dir" and not path.is_dir():
            raise InputError(path, "folder does not exist" if not path.exists() else "is not a folder")
        elif kind in ("out_dir", "out_file"):
            _check_writable(path, want_dir=kind == "out_dir")
    except InputError as exc:
        raise ParamError(name, str(exc)) from exc
    except OSError as exc:
        raise ParamError(name, f"{path}: cannot be read ({exc.strerror or exc})") from exc
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


def _model(name: str, value: Any, resolve_model: ModelResolver | None) -> str:
    from ..package import read_spec

    if isinstance(value, str) and value and "/" not in value and "\\" not in value \
            and not value.startswith(("~", ".")):
        found = resolve_model(value) if resolve_model else None
        if found is None:
            raise ParamError(name, f"unknown model {value!r}: give a model package folder "
                             "(absolute path) or a name that GET /models lists")
        return str(found)
    path = absolute_path(name, value)
    try:
        read_spec(path)
    except InputError as exc:
        raise ParamError(name, str(exc)) from exc
    except OSError as exc:
        raise ParamError(name, f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return str(path)
