"""A Python >= 3.10 with `venv` to base the backend's virtual environment on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MIN_VERSION = (3, 10)
_PROBE = ("import json, sys, venv, ensurepip; "
          "print(json.dumps([list(sys.version_info[:3]), sys.executable]))")


@dataclass(frozen=True)
class BasePython:
    path: str
    version: tuple[int, ...]

    @property
    def text(self) -> str:
        return f"Python {'.'.join(map(str, self.version))} at {self.path}"


def probe(command: list[str]) -> BasePython | str:
    """The Python `command` runs, or why it cannot serve (a sentence)."""
    try:
        out = subprocess.run([*command, "-c", _PROBE], capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(command)} cannot be run ({exc})"
    if out.returncode != 0:
        if "ensurepip" in out.stderr or "venv" in out.stderr:
            return (f"{' '.join(command)} has no venv module (on Debian or Ubuntu: "
                    "apt install python3-venv)")
        return f"{' '.join(command)} failed: {out.stderr.strip().splitlines()[-1:] or '?'}"
    version, executable = json.loads(out.stdout.strip().splitlines()[-1])
    if tuple(version) < MIN_VERSION:
        return f"{executable} is Python {'.'.join(map(str, version))}; the backend needs 3.10 or newer"
    return BasePython(executable, tuple(version))


def candidates() -> list[list[str]]:
    """Where a Python usually is: the `py` launcher and QGIS's own on Windows; `python3`
    on PATH elsewhere (inside QGIS `sys.executable` is QGIS itself, so it is checked by name)."""
    found: list[list[str]] = []
    if sys.platform.startswith("win"):
        if shutil.which("py"):
            found.append(["py", "-3"])
        for folder in (sys.prefix, sys.exec_prefix, os.path.dirname(sys.executable)):
            for name in ("python.exe", "python3.exe"):
                if (Path(folder) / name).is_file():
                    found.append([str(Path(folder) / name)])
    else:
        for name in ("python3", "python3.13", "python3.12", "python3.11", "python3.10"):
            if path := shutil.which(name):
                found.append([path])
        if Path(sys.executable).name.startswith("python"):
            found.append([sys.executable])
    unique: list[list[str]] = []
    for command in found:
        if command not in unique:
            unique.append(command)
    return unique


def find_python(given: str | None) -> BasePython:
    """The Python the user named, else the first suitable candidate."""
    from .steps import InstallError

    if given:
        found = probe([given])
        if isinstance(found, str):
            raise InstallError(f"the Python given cannot be used: {found}")
        return found
    reasons = []
    for command in candidates():
        found = probe(command)
        if isinstance(found, BasePython):
            return found
        reasons.append(found)
    raise InstallError("no Python 3.10 or newer with venv was found"
                       + (f" ({'; '.join(reasons)})" if reasons else " on PATH")
                       + ": install one (python.org, or apt install python3 python3-venv) and "
                       "give its path")
