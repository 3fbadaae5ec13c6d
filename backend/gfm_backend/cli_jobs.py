"""Job commands of `gfm`, derived from the job types' parameter models.

The options of `gfm classify`, `finetune`, `export`, `geopile build` and `pretrain` are
made from the same models the service validates with (`tasks/params.py`); the arguments
are then checked exactly as the service checks a submitted job (files, bounds, the
output-folder rule) and the job type's run function does the work, so the command line
and the service accept, refuse and do the same things.
"""

from __future__ import annotations

import argparse
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic.fields import FieldInfo

from .parameters import JobParams, ParamError, cli_of
from .progress import Progress


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _metavar(name: str, info: FieldInfo) -> str:
    many = typing.get_origin(_plain(info.annotation)) is list
    return (name[:-1] if many and name.endswith("s") else name).upper()


def _plain(annotation: Any) -> Any:
    """`Annotated[X | None, ...]` -> X."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return _plain(args[0])
    return annotation


def _argparse_kwargs(info: FieldInfo) -> dict[str, Any]:
    ann = _plain(info.annotation)
    # argparse formats help with %: a literal "10 %" must be "10 %%" (or --help crashes)
    kwargs: dict[str, Any] = {"help": (info.description or "").replace("%", "%%") or None}
    if ann is bool:
        return kwargs | {"action": "store_true"}
    if typing.get_origin(ann) is Literal:
        return kwargs | {"choices": typing.get_args(ann), "default": info.default}
    if typing.get_origin(ann) is list:
        item = _plain(typing.get_args(ann)[0])
        kwargs |= {"nargs": "+", "type": Path if item is Path else item}
    else:
        kwargs["type"] = {int: int, float: float, Path: Path}.get(ann, str)
    if not info.is_required():
        kwargs["default"] = info.default
    return kwargs


def add_model_arguments(parser: argparse.ArgumentParser, model: type[JobParams]) -> None:
    """One argparse argument per field users see, plus hidden ones for the tests."""
    for name, info in model.model_fields.items():
        cli = cli_of(info)
        if cli.internal and not cli.hidden_option:
            continue
        kwargs = _argparse_kwargs(info)
        if cli.hidden_option:
            kwargs["help"] = argparse.SUPPRESS
        if cli.positional:
            parser.add_argument(name, metavar=_metavar(name, info),
                                **{k: v for k, v in kwargs.items() if k != "default"})
        else:
            names = [_option(name), *(_option(a) for a in cli.aliases)]
            parser.add_argument(*names, dest=name, required=info.is_required(), **kwargs)


def _absolute(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value.absolute())
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    return value


def checked(job_type: str, values: dict[str, Any]) -> dict[str, Any]:
    """The command's arguments checked against the job type's declaration, exactly as the
    service checks a submitted job: files, bounds, the output-folder rule."""
    from .service.jobs import get_job_type

    kind = get_job_type(job_type)
    given = {k: _absolute(v) for k, v in values.items() if v is not None}
    for name, info in kind.params.model_fields.items():
        value = given.get(name)
        if cli_of(info).path_text and isinstance(value, str) and os.path.exists(value):
            given[name] = os.path.abspath(value)  # a path given as text (or a keyword)
    try:
        return kind.validate(given)
    except ParamError as exc:
        raise exc.as_option(kind.params.positional()) from exc


def run_job_command(job_type: str, args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Check the parsed arguments like the service does, then run the job in this process."""
    from .service.jobs import get_job_type

    kind = get_job_type(job_type)
    fields = kind.params.model_fields
    shown = {n: getattr(args, n) for n, f in fields.items() if not cli_of(f).internal}
    hidden = {n: getattr(args, n) for n, f in fields.items() if cli_of(f).hidden_option}
    clean = checked(job_type, shown)
    try:
        model = kind.params.checked(clean | hidden)
    except ParamError as exc:
        raise exc.as_option(kind.params.positional()) from exc
    return kind.run(model, progress)


def add_job_command(sub: argparse._SubParsersAction, job_type: str, help: str) -> None:
    from .service.jobs import get_job_type

    add_model_arguments(sub.add_parser(job_type, help=help), get_job_type(job_type).params)
