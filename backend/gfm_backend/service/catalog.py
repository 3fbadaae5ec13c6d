"""Model packages the service knows: folders under the models directories, and the
packages written by fine-tune jobs that succeeded. Classify jobs may name them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def _packages_in(root: Path) -> list[Path]:
    if (root / "model.json").is_file():
        return [root]
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "model.json").is_file())


def describe_model(path: Path, source: str) -> dict[str, Any]:
    """A package as GET /models shows it: its model.json as is, and what else is there."""
    entry: dict[str, Any] = {"name": path.name, "path": str(path), "source": source}
    try:
        entry["model"] = json.loads((path / "model.json").read_text(encoding="utf-8"))
        stat = (path / "model.json").stat()
        entry["modified"] = datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(
            timespec="seconds")
        entry["files"] = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
        entry["has_onnx"] = (path / "model.onnx").is_file()
    except (OSError, ValueError) as exc:
        entry["error"] = f"unreadable model package: {exc}"
    return entry


def list_models(roots: Iterable[Path], job_outputs: Iterable[tuple[str, Path]] = ()
                ) -> list[dict[str, Any]]:
    seen: set[Path] = set()
    models = []
    for root in roots:
        for path in _packages_in(root):
            if path.resolve() not in seen:
                seen.add(path.resolve())
                models.append(describe_model(path, f"models folder {root}"))
    for job_id, path in job_outputs:
        if (path / "model.json").is_file() and path.resolve() not in seen:
            seen.add(path.resolve())
            models.append(describe_model(path, f"fine-tune job {job_id}"))
    return models


def find_model(name: str, roots: Iterable[Path]) -> Path | None:
    """A package in the models folders by folder name (unique names only)."""
    found = [p for root in roots for p in _packages_in(root) if p.name == name]
    return found[0] if len(found) == 1 else None
