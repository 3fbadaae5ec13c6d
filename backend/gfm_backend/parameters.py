"""Job parameters, declared once: one pydantic model per job type, beside its task function.

From a model come the `gfm` sub-command's options (`cli_args`), the service's checks and
`GET /job-types`, the `POST /jobs` OpenAPI schema, and the plugin's Processing
parameters (through the JSON schema). Field metadata says what the model alone cannot:

- `Kind("raster")` and friends: what a path must be (checked before a job is queued, by
  `service.params.check_paths`, not when a model is built, so tasks and tests can build
  one cheaply);
- `Cli(...)`: positional on the command line, other accepted names (`aliases`), an
  accepted name meaning the opposite boolean (`negation`), or internal (not offered to
  users at all).

Errors keep the service's wording (`params.batch_size: must be at least 1, got 0`).
"""

from __future__ import annotations

import functools
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo

from .errors import GfmError

PATH_KINDS = ("raster", "rasters", "vector", "path", "dir", "model", "weights", "out_dir",
              "out_file")
INPUT_KINDS = frozenset({"raster", "rasters", "vector", "path", "dir", "model", "weights"})
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d{1,2})?)$"
SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"


class ParamError(GfmError):
    """A job parameter a user must fix; `field` names it, `problem` says what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.problem = field, message
        super().__init__(f"params.{field}: {message}")

    status = 400  # the HTTP answer

    def as_option(self, positional: frozenset[str] = frozenset()) -> GfmError:
        """The same problem named as the command line names it (`--min-area`, `RASTER`)."""
        name = self.field.upper() if self.field in positional else "--" + self.field.replace("_", "-")
        return GfmError(f"{name}: {self.problem}")


class ParamConflict(ParamError):
    """A param that is fine but cannot be used now (a folder another job is writing)."""

    status = 409


@dataclass(frozen=True)
class Kind:
    """What a path field must name; see the module docstring. `keywords`: words the field
    takes besides paths (a teacher of 'none'); `suffix`: the extension an output file
    takes (the plugin's file dialog filters on it)."""

    kind: str
    keywords: tuple[str, ...] = ()
    suffix: str = ""

    def __post_init__(self) -> None:
        if self.kind not in PATH_KINDS:
            raise ValueError(f"unknown path kind {self.kind!r}; use one of {PATH_KINDS}")


@dataclass(frozen=True)
class Cli:
    positional: bool = False
    aliases: tuple[str, ...] = ()
    negation: str | None = None
    internal: bool = False  # a knob for tests and the demo, not an option for users
    hidden_option: bool = False  # internal, but the command line takes it (not in --help)
    path_text: bool = False  # text that may be a path: the command line makes it absolute


# The vocabulary the job models use.
StrictInt = Annotated[int, Strict()]
StrictFloat = Annotated[float, Strict()]
StrictBool = Annotated[bool, Strict()]
StrictStr = Annotated[str, Strict()]
Device = Annotated[str, Strict(), StringConstraints(pattern=DEVICE_PATTERN)]
Sha256 = Annotated[str, Strict(), StringConstraints(pattern=SHA256_PATTERN)]
Seed = Annotated[int, Strict(), Field(ge=0, le=2**31 - 1)]  # what every seed (and QGIS) takes
Config = Literal["base", "tiny"]
Bands = Annotated[list[Annotated[int, Strict(), Field(ge=1, le=100_000)]], Field(min_length=1)]
MAX_BATCH, MAX_EPOCHS = 4096, 100_000


def as_list(value: Any) -> Any:
    """One path where a list is expected is a list of one."""
    return value if isinstance(value, list) or value is None else [value]


def kind_of(info: FieldInfo) -> str | None:
    return next((m.kind for m in info.metadata if isinstance(m, Kind)), None)


def cli_of(info: FieldInfo) -> Cli:
    return next((m for m in info.metadata if isinstance(m, Cli)), Cli())


_AS_PARAMS: ContextVar[bool] = ContextVar("gfm_params_errors_as_params", default=False)


class JobParams(BaseModel):
    """Base of every job's parameter model. Positional construction follows field order,
    as the dataclasses these replace did (`ClassifyParams(raster, model, out)`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, protected_namespaces=(),
                              validate_assignment=False, arbitrary_types_allowed=False)
    job: ClassVar[str] = "job"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = type(self).field_order()
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional arguments")
        for name, value in zip(names, args, strict=False):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__} got {name!r} twice")
            kwargs[name] = value
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            error = param_error(exc, type(self))
        except ParamError as exc:
            error = exc
        else:
            return
        if _AS_PARAMS.get():
            raise error
        raise error.as_option(type(self).positional())  # built in code: option names

    @classmethod
    def checked(cls, data: dict[str, Any]) -> JobParams:
        """Validate submitted params; errors name them as the service does (`params.x`)."""
        token = _AS_PARAMS.set(True)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise param_error(exc, cls) from None
        finally:
            _AS_PARAMS.reset(token)

    @classmethod
    def positional(cls) -> frozenset[str]:
        return frozenset(n for n, f in cls.model_fields.items() if cli_of(f).positional)

    @classmethod
    def field_order(cls) -> list[str]:
        """The inputs (positional fields) first, then the rest as declared: a job type that
        shares its options with another through a base model still starts with its inputs."""
        names = list(cls.model_fields)
        first = [n for n in names if cli_of(cls.model_fields[n]).positional]
        return first + [n for n in names if n not in first]

    @classmethod
    def exposed(cls) -> dict[str, FieldInfo]:
        """The fields users see (command line, service, plugin), inputs first."""
        return {n: cls.model_fields[n] for n in cls.field_order()
                if not cli_of(cls.model_fields[n]).internal}

    @model_validator(mode="before")
    @classmethod
    def _canonical_names(cls, data: Any) -> Any:
        """Aliases and negations to canonical names; a name given twice is an error."""
        if not isinstance(data, dict):
            return data
        out: dict[str, Any] = {}
        source: dict[str, str] = {}
        for key, value in data.items():
            name, value = _canonical(cls, key, value)
            if name in source:
                raise ParamError(key, f"given twice (as {source[name]!r} and {key!r}); give one")
            out[name], source[name] = value, key
        # an explicit null means "the default" for an optional field
        return {k: v for k, v in out.items() if v is not None or _required(cls, k)}


def _required(cls: type[JobParams], name: str) -> bool:
    info = cls.model_fields.get(name)
    return info is not None and info.is_required()


def _canonical(cls: type[JobParams], key: str, value: Any) -> tuple[str, Any]:
    for name, info in cls.model_fields.items():
        cli = cli_of(info)
        if key in cli.aliases:
            return name, value
        if key == cli.negation:
            if not isinstance(value, bool):
                raise ParamError(key, f"must be true or false, got {show(value)}")
            return name, not value
    return key, value


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bound(info: FieldInfo | None, key: str) -> float | None:
    for m in (info.metadata if info else ()):
        if getattr(m, key, None) is not None:
            return float(getattr(m, key))
    return None


_PLAIN = {  # pydantic's error type -> our words ("..., got VALUE")
    "int_type": "must be an integer", "int_parsing": "must be an integer",
    "int_from_float": "must be an integer", "float_type": "must be a number",
    "float_parsing": "must be a number", "finite_number": "must be a number",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "path_type": "must be a path (a non-empty string)", "string_type": "must be a string",
    "list_type": "must be a list",
}
_BOUNDS = {"greater_than_equal": ("ge", "at least"), "greater_than": ("gt", "more than"),
           "less_than_equal": ("le", "at most"), "less_than": ("lt", "less than")}


def _message(err: dict[str, Any], cls: type[JobParams]) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    got = f"got {show(value)}"
    if kind in _PLAIN:
        return f"{_PLAIN[kind]}, {got}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"must be {words} {float(ctx[key]):g}, {got}"
    if kind == "missing":
        return f"missing; a {cls.job} job needs it"
    if kind == "extra_forbidden":
        return f"unknown option for a {cls.job} job; known options: {', '.join(sorted(cls.exposed()))}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace(" or ", ", ").replace("'", "")
        return f"must be one of {expected}, {got}"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == DEVICE_PATTERN:
        return f"must be auto, cpu, cuda or cuda:N, {got}"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == SHA256_PATTERN:
        return f"must be a SHA-256: 64 hexadecimal digits, {got}"
    if kind == "multiple_of":
        return f"must be a multiple of {ctx.get('multiple_of')} (the encoder's patch x window grid), {got}"
    if kind == "too_short":
        return "give at least one value"
    return f"{err.get('msg', 'invalid')}, {got}"


def param_error(exc: ValidationError, cls: type[JobParams]) -> ParamError:
    """The first problem pydantic found, in the service's words, naming the field."""
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    field = loc[0] if loc else "params"
    return ParamError(field, _message(dict(err), cls))


def dumped(params: JobParams) -> dict[str, Any]:
    """The params as JSON values (paths as strings): what the service stores and sends."""
    return params.model_dump(mode="json")


def describe_field(name: str, info: FieldInfo) -> dict[str, Any]:
    """One field for `GET /job-types` (the shape the plugin reads)."""
    kind = kind_of(info) or _plain_kind(info)
    out: dict[str, Any] = {"name": name, "kind": kind, "required": info.is_required()}
    if not info.is_required():
        out["default"] = info.default
    choices = _choices(info)
    if choices:
        out["choices"] = choices
    for key, label in (("ge", "minimum"), ("le", "maximum")):
        bound = _bound(info, key)
        if bound is not None:
            out[label] = bound
    cli = cli_of(info)
    if cli.aliases:
        out["aliases"] = list(cli.aliases)
    if cli.negation:
        out["negation"] = cli.negation
    if cli.path_text:
        out["path_text"] = True
    suffix = next((m.suffix for m in info.metadata if isinstance(m, Kind) and m.suffix), None)
    if suffix:
        out["suffix"] = suffix
    if info.description:
        out["help"] = info.description
    if info.title:
        out["title"] = info.title
    return out


def _choices(info: FieldInfo) -> list[Any]:
    from typing import get_args, get_origin

    ann = info.annotation
    if get_origin(ann) is Literal:
        return list(get_args(ann))
    return []


def _plain_kind(info: FieldInfo) -> str:
    from typing import get_args, get_origin

    ann: Any = info.annotation
    args = [a for a in get_args(ann) if a is not type(None)]
    if get_origin(ann) not in (None, list) and args:  # X | None
        ann = args[0]
    while get_origin(ann) is Annotated:
        ann = get_args(ann)[0]
    if get_origin(ann) is list:
        return "ints"
    return {bool: "bool", int: "int", float: "float"}.get(ann, "str")


@functools.cache
def public_model(cls: type[JobParams]) -> type[BaseModel]:
    """The model as users see it (no internal fields): for schemas and documentation."""
    fields: dict[str, Any] = {n: (f.annotation, f) for n, f in cls.exposed().items()}
    return create_model(cls.__name__, __config__=ConfigDict(extra="forbid"), __doc__=cls.__doc__,
                        **fields)


def job_request_schema(kinds: list[tuple[str, type[JobParams]]]) -> dict[str, Any]:
    """`POST /jobs`'s body: one variant per job type, told apart by `type`."""
    variants = []
    for name, cls in kinds:
        tag: Any = Literal[name]
        variants.append(create_model(f"{_camel(name)}Job", __config__=ConfigDict(extra="forbid"),
                                     type=(tag, ...), params=(public_model(cls), ...)))
    union: Any = variants[0] if len(variants) == 1 else Union[tuple(variants)]  # noqa: UP007
    body: Any = Annotated[union, Field(discriminator="type")]
    adapter: TypeAdapter[Any] = TypeAdapter(body)
    return adapter.json_schema(ref_template="#/components/schemas/{model}")


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_"))


def path_fields(cls: type[JobParams]) -> dict[str, str]:
    """Field name -> path kind, for the checks before queueing."""
    return {n: k for n, f in cls.model_fields.items() if (k := kind_of(f))}


def keywords_of(cls: type[JobParams], name: str) -> tuple[str, ...]:
    info = cls.model_fields[name]
    return next((m.keywords for m in info.metadata if isinstance(m, Kind)), ())
