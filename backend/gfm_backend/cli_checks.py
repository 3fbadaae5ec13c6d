"""The command line checks its arguments against the job types' declarations, exactly as
the service checks a submitted job, so both accept and refuse the same things."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import GfmError

POSITIONAL = frozenset({"raster", "rasters", "model_dir", "src_folder", "pile_dir"})


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
    from .service.params import ParamError

    given = {k: _absolute(v) for k, v in values.items() if v is not None}
    try:
        return get_job_type(job_type).validate(given)
    except ParamError as exc:
        name = exc.field.upper() if exc.field in POSITIONAL else "--" + exc.field.replace("_", "-")
        raise GfmError(f"{name}: {exc.problem}") from exc
