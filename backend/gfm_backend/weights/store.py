"""The weights a backend has: `STATE_DIR/weights/NAME/` holds the file under its published
name and `weights.json`, the record `gfm weights list` shows (size, SHA-256, where it
came from, what it is). A folder appears only complete: files are staged in
`weights/.partial/` and the folder is renamed into place once verified."""

from __future__ import annotations

import contextlib
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..atomic import atomic_dir
from ..errors import GfmError, InputError
from ..service.config import default_state_dir

RECORD = "weights.json"
PARTIAL = ".partial"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str) -> str:
    if not NAME_RE.match(name) or name.endswith(".partial"):
        raise GfmError(f"{name!r} is not a usable weights name: use letters, digits, '.', '_' "
                       "and '-' (at most 64, starting with a letter or digit)")
    return name


def looks_like_name(value: str) -> bool:
    """A bare word (no folder part): a weights name rather than a path."""
    return bool(NAME_RE.match(value)) and os.sep not in value and "/" not in value


class WeightsStore:
    """One backend's weights folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @classmethod
    def default(cls) -> WeightsStore:
        """The store of the backend in `$GFM_STATE_DIR` (or the user's default state folder)."""
        return cls(default_state_dir() / "weights")

    def staging(self, name: str) -> Path:
        return self.root / PARTIAL / check_name(name)

    def records(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        found = []
        for folder in sorted(self.root.iterdir()):
            record = self.record(folder.name) if not folder.name.startswith(".") else None
            if record is not None:
                found.append(record)
        return found

    def record(self, name: str) -> dict[str, Any] | None:
        path = self.root / name / RECORD
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        file = self.root / name / str(record.get("file", ""))
        return record | {"path": str(file)} if file.is_file() else None

    def find(self, name: str) -> Path | None:
        """The file of an installed entry."""
        record = self.record(name) if looks_like_name(name) else None
        return Path(record["path"]) if record else None

    def install(self, name: str, staged: Path, record: dict[str, Any]) -> dict[str, Any]:
        """Move a verified staged file in as `name`, with its record; all or nothing."""
        check_name(name)
        if self.record(name) is not None:
            raise GfmError(f"weights {name!r} are already installed; remove them first "
                           f"(gfm weights remove {name}) or choose another --name")
        if (self.root / name).exists():  # never replace a folder that is not a complete entry
            raise GfmError(f"{self.root / name} exists but holds no complete weights entry; "
                           "remove it or choose another --name")
        filename = Path(record["file"]).name
        full = record | {"name": name, "file": filename,
                         "added": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        with atomic_dir(self.root / name) as tmp:
            os.replace(staged, tmp / filename)
            (tmp / RECORD).write_text(json.dumps(full, indent=2), encoding="utf-8")
        return self.record(name) or full

    def clear_staging(self, name: str) -> None:
        """Remove `name`'s staging folder once nothing is left in it (a partial download
        waiting to be resumed keeps it)."""
        for folder in (self.staging(name), self.root / PARTIAL):
            with contextlib.suppress(OSError):
                folder.rmdir()

    def remove(self, name: str) -> dict[str, Any]:
        record = self.record(check_name(name))
        if record is None:
            raise InputError(name, f"no weights of that name (installed: {self.names_text()})")
        folder = self.root / name
        for path in (Path(record["path"]), folder / RECORD):  # ours only: anything else stays
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()
        return record

    def names_text(self) -> str:
        return ", ".join(r["name"] for r in self.records()) or "none"
