"""GeoPile jobs: build (or grow) a pile from a folder of imagery, and summarise one.

The CLI (`gfm geopile build|info`) and the job service call these; the work itself lives
in `data.geopile` (chip rules), `data.geopile_build` (shards, manifest) and
`data.geopile_reader` (format, reader).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.geopile import CutRules
from ..data.geopile_build import BuildOptions, build
from ..data.geopile_reader import pile_info
from ..errors import GfmError
from ..progress import Progress

log = logging.getLogger(__name__)


@dataclass
class GeopileParams:
    src_folder: Path
    out: Path
    chip: int = 192
    bands: list[int] | None = None  # 1-based; three (R G B) or one (grey)
    dataset: str | None = None  # default: the first folder below src_folder
    min_valid: float = 0.75  # least fraction of valid (not nodata) pixels a chip keeps
    blank_std: float = 2.0  # chips whose every channel varies less than this are blank
    shard_chips: int = 1024  # chips per shard file (a new pile only)
    workers: int = 0  # reader threads; 0: up to 4, one per CPU core

    def __post_init__(self) -> None:  # callers (service JSON, tests) may pass strings
        self.src_folder, self.out = Path(self.src_folder), Path(self.out)
        if self.chip < 32:
            raise GfmError(f"--chip {self.chip} is too small; use at least 32 px (the paper uses 192)")
        if self.bands is not None:
            self.bands = [int(b) for b in self.bands]
            if len(self.bands) not in (1, 3) or min(self.bands) < 1:
                raise GfmError(f"--bands {self.bands}: give three 1-based band numbers (R G B) or one (grey)")
        if not 0.0 < self.min_valid <= 1.0:
            raise GfmError(f"--min-valid {self.min_valid} must be in (0, 1]")
        if self.shard_chips < 1:
            raise GfmError("--shard-chips must be at least 1")
        if self.workers <= 0:
            self.workers = max(1, min(4, os.cpu_count() or 1))


def build_geopile(params: GeopileParams, progress: Progress | None = None) -> dict[str, Any]:
    """Add the new and changed images under src_folder to the pile at out; returns a summary.

    Summary keys: files_found, files_processed (this build), files_unchanged, chips_added,
    chips_total, dropped (nodata, blank, duplicate), skipped ([{file, problem}]), time_s, info.
    """
    rules = CutRules(chip=params.chip, bands=tuple(params.bands) if params.bands else None,
                     min_valid=params.min_valid, blank_std=params.blank_std)
    summary = build(BuildOptions(src=params.src_folder, out=params.out, rules=rules, dataset=params.dataset,
                                 shard_chips=params.shard_chips, workers=params.workers), progress)
    for item in summary["skipped"]:
        log.warning("skipped %s: %s", item["file"], item["problem"])
    info = pile_info(params.out)
    summary["info"] = {k: v for k, v in info.items() if k != "failed_files"}
    return summary


def geopile_info(pile_dir: Path | str) -> dict[str, Any]:
    """Chips per source dataset and GSD band, bytes on disk, sources ok/failed (with names)."""
    return pile_info(Path(pile_dir))
