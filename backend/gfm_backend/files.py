"""What a named input must be before anything opens it."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError


def refuse_special(path: Path | str) -> None:
    """A pipe, socket or device would block the reader until someone writes to it."""
    path = Path(path)
    if path.exists() and not (path.is_file() or path.is_dir()):
        raise InputError(path, "is not a regular file or folder (a pipe, socket or device); "
                         "give a file")
