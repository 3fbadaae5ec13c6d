"""`gfm geopile build|info`: thin argument parsing around the GeoPile task functions."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..cli_checks import checked
from ..progress import Progress


def add_geopile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("geopile", help="turn a folder of imagery into a GeoPile for pretraining")
    cmd = p.add_subparsers(dest="geopile_command", required=True)
    b = cmd.add_parser("build", help="build or grow a GeoPile (only new and changed files are read)")
    b.add_argument("src_folder", type=Path, metavar="SRC_FOLDER")
    b.add_argument("--out", type=Path, required=True, help="GeoPile folder to create or grow")
    b.add_argument("--chip", type=int, default=192,
                   help="chip size in px (larger than 192 leaves room for random resized crops)")
    b.add_argument("--bands", type=int, nargs="+",
                   help="1-based bands to use where a file has them: R G B, or one for grey")
    b.add_argument("--dataset", help="source dataset name (default: first folder below SRC_FOLDER)")
    b.add_argument("--min-valid", type=float, default=0.75,
                   help="drop chips with a smaller fraction of valid (not nodata) pixels")
    b.add_argument("--blank-std", type=float, default=2.0,
                   help="drop chips whose every channel's standard deviation is below this")
    b.add_argument("--shard-chips", type=int, default=1024, help="chips per shard (new piles only)")
    b.add_argument("--workers", type=int, default=0, help="reader threads (0: up to 4)")
    i = cmd.add_parser("info", help="chips per dataset and GSD band, bytes, failed files")
    i.add_argument("pile", type=Path, metavar="GEOPILE_DIR")


def run_geopile(a: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .geopile import GeopileParams, build_geopile, geopile_info

    if a.geopile_command == "info":
        return geopile_info(a.pile)
    names = ("src_folder", "out", "chip", "bands", "dataset", "min_valid", "blank_std",
             "shard_chips", "workers")
    p = checked("geopile", {n: getattr(a, n) for n in names})
    return build_geopile(GeopileParams(**{n: p[n] for n in names}), progress)
