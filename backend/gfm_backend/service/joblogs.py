"""Reading job logs (a job's worker and the dispatcher append to `jobs/<id>.log`)."""

from __future__ import annotations

from pathlib import Path


def read_log(path: Path, max_bytes: int) -> str:
    """The end of a log file, at most `max_bytes`, starting at a line boundary."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", "replace")
    return text if size <= max_bytes else text.split("\n", 1)[-1]


def log_tail(path: Path, lines: int) -> list[str]:
    return read_log(path, 16_384).splitlines()[-lines:]
