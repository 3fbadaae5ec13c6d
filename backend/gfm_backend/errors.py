"""Errors a user can act on: the CLI and the service show their message, never a traceback."""

from __future__ import annotations


class GfmError(Exception):
    """A problem with the user's input or environment, explained in plain words."""


class InputError(GfmError):
    """A named input (file, field, option) is missing, unreadable or unsuitable."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class Cancelled(GfmError):
    """The job was cancelled by the user; partial outputs were discarded."""

    def __init__(self, message: str = "cancelled by the user") -> None:
        super().__init__(message)


_ENV_ERRNOS = {
    28: "no space left on the disk",  # ENOSPC
    122: "disk quota exceeded",  # EDQUOT
    30: "the disk is read-only",  # EROFS
    13: "permission denied",  # EACCES
    1: "operation not permitted",  # EPERM
}


def environment_problem(exc: BaseException) -> str | None:
    """A full disk or a missing permission is the user's to fix, not a bug: say which file."""
    if "No space left on device" in str(exc) and not isinstance(exc, OSError):  # GDAL's wording
        return f"no space left on the disk ({exc}): free some space or choose another output folder"
    if not isinstance(exc, OSError) or exc.errno not in _ENV_ERRNOS:
        return None
    where = f" writing {exc.filename}" if exc.filename else ""
    return (f"{_ENV_ERRNOS[exc.errno]}{where}: free some space, fix the permissions or choose "
            "another output folder (nothing half-written was kept)")
