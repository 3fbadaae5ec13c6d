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
