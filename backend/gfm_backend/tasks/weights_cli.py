"""`gfm weights list | get | import | remove` argument parsing (thin callers of tasks/weights)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..cli_jobs import add_model_arguments, run_job_command
from ..progress import Progress
from ..service.config import STATE_DIR_ENV
from .params import WeightsGetParams, WeightsImportParams


def add_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="encoder weights: the GFM checkpoint, the ImageNet-22k "
                       "teacher, your own (list, get, import, remove)")
    p.add_argument("--state-dir", help=f"the backend's state folder (default: ${STATE_DIR_ENV} or "
                   "the user's data folder, as gfm serve)")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="installed weights and the catalog")
    add_model_arguments(actions.add_parser("get", help="download catalog weights or a URL"),
                        WeightsGetParams)
    add_model_arguments(actions.add_parser("import", help="add a checkpoint file you downloaded"),
                        WeightsImportParams)
    remove = actions.add_parser("remove", help="delete installed weights")
    remove.add_argument("name", metavar="NAME")


def run_weights(a: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .weights import list_weights, remove_weights

    if a.state_dir:
        os.environ[STATE_DIR_ENV] = os.path.abspath(a.state_dir)
    if a.action == "list":
        return list_weights()
    if a.action == "remove":
        return remove_weights(a.name)
    return run_job_command("weights" if a.action == "get" else "weights-import", a, progress)
