"""`gfm pretrain` and `gfm export-encoder` argument parsing (thin callers of tasks/pretrain)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..cli_checks import checked
from ..progress import Progress


def add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="GFM continual pretraining on a GeoPile "
                       "(torchrun --nproc-per-node N -m gfm_backend.cli pretrain ... for several GPUs)")
    p.add_argument("pile_dir", type=Path, metavar="PILE_DIR")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--teacher", help="ImageNet-22k Swin checkpoint, or 'none' (MIM only)")
    p.add_argument("--config", choices=("base", "tiny"), default="base")
    p.add_argument("--batch", type=int, default=128, help="images per step per process")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=float, default=100)
    length.add_argument("--max-steps", type=int)
    p.add_argument("--warmup-epochs", type=float, help="default: the first 10 %% of the run")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh over a previous run in --out (deletes that run's files only)")
    p.add_argument("--device", default="auto")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attention", choices=("auto", "eager", "sdpa"), default="auto",
                   help="window attention: eager, or sdpa (fused); auto: sdpa on CUDA")
    p.add_argument("--compile-blocks", action="store_true",
                   help="torch.compile each Swin block (faster steps after minutes of warm-up)")
    p.add_argument("--record-chips", action="store_true", help=argparse.SUPPRESS)


def run_pretrain(a: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .pretrain import PretrainParams, pretrain

    names = ("pile_dir", "out", "teacher", "config", "batch", "epochs", "max_steps",
             "warmup_epochs", "resume", "device", "checkpoint_every", "log_every", "seed",
             "attention", "compile_blocks", "overwrite")
    values = {n: getattr(a, n) for n in names}
    if a.teacher and a.teacher.lower() != "none":
        values["teacher"] = Path(a.teacher)  # a path, made absolute like the others
    p = checked("pretrain", values)
    return pretrain(PretrainParams(**{n: p[n] for n in names}, record_chips=a.record_chips), progress)


def add_export_encoder(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-encoder", help="the pretrained student as an encoder checkpoint")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, required=True)


def run_export_encoder(a: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .pretrain import export_encoder

    return {"encoder": str(export_encoder(a.run_dir, a.out))}
