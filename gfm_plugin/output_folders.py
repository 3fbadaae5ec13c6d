"""Where the plugin puts what it makes: labels, models, results and exported layers.

Beside the project (`<project folder>/gfm/`) when the project is saved, so the work
travels with it; otherwise the folder set in Settings (by default `~/GFM`). Never a
temporary folder the system may empty, and never a folder that exists already: each job
gets a new one, so nothing of the user's is overwritten."""

from __future__ import annotations

import time
from pathlib import Path

from qgis.core import QgsProject

SUBFOLDER = "gfm"
KINDS = ("labels", "models", "results", "exports")


def default_root() -> str:
    return str(Path.home() / "GFM")


def output_root(results_dir: str = "") -> Path:
    """The folder the plugin's outputs go under, by the rule above."""
    home = QgsProject.instance().homePath()
    if QgsProject.instance().fileName() and home:
        return Path(home) / SUBFOLDER
    return Path(results_dir or default_root())


def folder_for(kind: str, results_dir: str = "") -> Path:
    """`labels`, `models`, `results` or `exports` under the output root (created)."""
    assert kind in KINDS, kind
    path = output_root(results_dir) / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_folder_name(parent: Path, stem: str) -> Path:
    """A folder name under `parent` that does not exist yet: `<stem>-<date>-<time>[-n]`."""
    base = f"{safe_name(stem)}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = parent / base, 1
    while candidate.exists():
        n += 1
        candidate = parent / f"{base}-{n}"
    return candidate


def new_file(parent: Path, stem: str, suffix: str) -> Path:
    """`<stem><suffix>`, or `<stem>_<n><suffix>` when taken."""
    candidate, n = parent / f"{stem}{suffix}", 1
    while candidate.exists():
        candidate = parent / f"{stem}_{n}{suffix}"
        n += 1
    return candidate


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "layer"
