"""The rule for a job that writes one file rather than a folder (suggestions): never an
input, never inside a model package, never someone's existing file without `overwrite`.
Light, so the service checks it before queueing."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError


def check_output_file(out: Path, suffix: str, overwrite: bool,
                      inputs: dict[str, Path | None], inside_not: Path | None = None) -> Path:
    """`out` as the job will write it, or an InputError naming the file and the problem."""
    out = Path(out)
    if out.suffix.lower() != suffix:
        raise InputError(out, f"give a {suffix} file name")
    if out.is_dir():
        raise InputError(out, "is a folder; give a file name")
    for role, path in inputs.items():
        if path is not None and out.absolute().resolve() == Path(path).absolute().resolve():
            raise InputError(out, f"is the job's {role}; choose another file name")
    if inside_not is not None and out.absolute().resolve().parent == inside_not.resolve():
        raise InputError(out, f"lies in the model package {inside_not}; write it elsewhere")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise InputError(out, "already exists; pass --overwrite (service: \"overwrite\": true) "
                         "to replace it, or choose another file name")
    return out
