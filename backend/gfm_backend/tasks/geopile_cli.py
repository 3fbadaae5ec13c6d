"""`gfm geopile build|info`: thin argument parsing around the GeoPile task functions."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..cli_jobs import add_model_arguments, run_job_command
from ..progress import Progress
from .params import GeopileParams


def add_geopile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("geopile", help="turn a folder of imagery into a GeoPile for pretraining")
    cmd = p.add_subparsers(dest="geopile_command", required=True)
    b = cmd.add_parser("build", help="build or grow a GeoPile (only new and changed files are read)")
    add_model_arguments(b, GeopileParams)
    i = cmd.add_parser("info", help="chips per dataset and GSD band, bytes, failed files")
    i.add_argument("pile", type=Path, metavar="GEOPILE_DIR")


def run_geopile(a: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .geopile import geopile_info

    if a.geopile_command == "info":
        return geopile_info(a.pile)
    return run_job_command("geopile", a, progress)
