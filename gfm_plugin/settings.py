"""Plugin settings (QgsSettings): how to reach the backend."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from qgis.core import QgsSettings

PREFIX = "gfm/"
MODES = ("local", "remote")


def default_state_dir() -> str:
    """The folder `gfm serve` uses by default, so a backend started by hand is found too."""
    if os.environ.get("GFM_STATE_DIR"):
        return os.environ["GFM_STATE_DIR"]
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA", Path.home()))
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return str(base / "gfm-qgis" / "service")


def default_python() -> str:
    """A Python with the backend installed: `gfm` on PATH tells us where it lives."""
    gfm = shutil.which("gfm")
    if gfm:
        candidate = Path(gfm).resolve().parent / "python"
        if candidate.exists():
            return str(candidate)
    return ""


@dataclass
class BackendSettings:
    mode: str = "local"  # "local": start/find a backend with `python`; "remote": url + token
    python: str = ""
    state_dir: str = ""
    url: str = ""
    token: str = ""
    models_dir: str = ""
    results_dir: str = ""  # where Classify layer writes (default: a new temporary folder)

    @classmethod
    def load(cls) -> BackendSettings:
        s = QgsSettings()
        return cls(
            mode=s.value(PREFIX + "mode", "local"),
            python=s.value(PREFIX + "python", "") or default_python(),
            state_dir=s.value(PREFIX + "state_dir", "") or default_state_dir(),
            url=s.value(PREFIX + "url", ""),
            token=s.value(PREFIX + "token", ""),
            models_dir=s.value(PREFIX + "models_dir", ""),
            results_dir=s.value(PREFIX + "results_dir", ""),
        )

    def save(self) -> None:
        s = QgsSettings()
        for key in ("mode", "python", "state_dir", "url", "token", "models_dir", "results_dir"):
            s.setValue(PREFIX + key, getattr(self, key))
