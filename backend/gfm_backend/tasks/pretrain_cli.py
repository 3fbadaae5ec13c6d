"""`gfm pretrain` and `gfm export-encoder` argument parsing (thin callers of tasks/pretrain)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..cli_jobs import add_model_arguments, run_job_command
from ..progress import Progress
from .params import PretrainParams


def add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="GFM continual pretraining on a GeoPile "
                       "(torchrun --nproc-per-node N -m gfm_backend.cli pretrain ... for several GPUs)")
    add_model_arguments(p, PretrainParams)


def run_pretrain(a: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    result = run_job_command("pretrain", a, progress)
    return {k: v for k, v in result.items() if k != "files"}


def add_export_encoder(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-encoder", help="the pretrained student as an encoder checkpoint")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, required=True)


def run_export_encoder(a: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .pretrain import export_encoder

    return {"encoder": str(export_encoder(a.run_dir, a.out))}
