"""GeoPile jobs: build (or grow) a pile from a folder of imagery, and summarise one.

The CLI (`gfm geopile build|info`) and the job service call these; the work itself lives
in `data.geopile` (chip rules), `data.geopile_build` (shards, manifest) and
`data.geopile_reader` (format, reader).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..data.geopile_build import BuildOptions, build
from ..data.geopile_reader import pile_info
from ..data.geopile_rules import CutRules
from ..progress import Progress
from .params import GeopileParams

log = logging.getLogger(__name__)


def build_geopile(params: GeopileParams, progress: Progress | None = None) -> dict[str, Any]:
    """Add the new and changed images under src_folder to the pile at out; returns a summary.

    Summary keys: files_found, files_processed (this build), files_unchanged, chips_added,
    chips_total, dropped (nodata, blank, duplicate), skipped ([{file, problem}]), time_s, info.
    """
    rules = CutRules(chip=params.chip, bands=tuple(params.bands) if params.bands else None,
                     min_valid=params.min_valid, blank_std=params.blank_std)
    summary = build(BuildOptions(src=params.src_folder, out=params.out, rules=rules, dataset=params.dataset,
                                 shard_chips=params.shard_chips, workers=params.reader_threads), progress)
    for item in summary["skipped"]:
        log.warning("skipped %s: %s", item["file"], item["problem"])
    info = pile_info(params.out)
    summary["info"] = {k: v for k, v in info.items() if k != "failed_files"}
    return summary


def geopile_info(pile_dir: Path | str) -> dict[str, Any]:
    """Chips per source dataset and GSD band, bytes on disk, sources ok/failed (with names)."""
    return pile_info(Path(pile_dir))
