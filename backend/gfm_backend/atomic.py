"""Outputs appear only when complete: work in a hidden staging folder, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def staging_dir(final_dir: Path, last: tuple[str, ...] = ("model.json",)) -> Iterator[Path]:
    """Yield a temporary folder beside `final_dir`; on success move its files into place.

    Files already in `final_dir` that the job does not produce are left alone; a failure
    or cancel removes the staging folder, so nothing half-written looks finished. Names in
    `last` (the file that marks a finished model package) are moved after everything else.
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.partial-", dir=final_dir.parent))
    try:
        yield stage
        final_dir.mkdir(parents=True, exist_ok=True)
        for item in sorted(stage.iterdir(), key=lambda p: (p.name in last, p.name)):
            target = final_dir / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a small text file so readers never see it half written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
