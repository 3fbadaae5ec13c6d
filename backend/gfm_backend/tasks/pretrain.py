"""GFM continual pretraining on a GeoPile, on one device or many (torchrun).

The objective is the paper's (see `models/pretrainer.py`); this module is the loop:
data position, augmentation on the device, masks, bf16 autocast on CUDA, AdamW with the
official schedule, gradient clipping, JSON-lines metrics, atomic checkpoints and exact
resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from ..atomic import write_text_atomic
from ..data.geopile_reader import GeoPile
from ..errors import Cancelled, GfmError, InputError
from ..models import CONFIGS, build_pretrainer, save_encoder
from ..models.masking import MaskGenerator
from ..outputs import PRETRAIN, acquire, check_output_dir, prepare_in_place, release, write_manifest
from ..progress import Progress, silent
from ..training.distributed import DistContext, all_mean, barrier, init_distributed, shutdown
from ..training.optim import Lrs, WarmupCosineSchedule, build_optimizer, linear_scaled_lrs
from ..training.run_checkpoints import (
    latest_checkpoint,
    load_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from ..training.speed import compile_blocks, resolve_attention, set_attention
from ..training.step import train_step
from .params import PretrainParams

log = logging.getLogger(__name__)
METRICS = "metrics.jsonl"
ENCODER_FILE = "encoder.safetensors"


def _teacher_arg(params: PretrainParams) -> str | None:
    if params.teacher is None:
        raise GfmError("give --teacher: an ImageNet-22k Swin checkpoint (the paper's teacher), "
                       "or --teacher none for the MIM-only ablation")
    if str(params.teacher).lower() == "none":
        return None
    if not Path(params.teacher).exists():
        raise InputError(params.teacher, "teacher checkpoint does not exist")
    return str(params.teacher)


def _schedule(params: PretrainParams, steps_per_epoch: int) -> tuple[int, int]:
    """(total steps, warmup steps): the paper warms up 10 of 100 epochs."""
    if params.max_steps:
        total = int(params.max_steps)
    else:
        total = int(float(params.epochs or 100) * steps_per_epoch)
    if params.warmup_epochs is not None:
        warmup = int(params.warmup_epochs * steps_per_epoch)
    else:
        warmup = int(total * 0.1)
    return max(total, 1), min(warmup, max(total - 1, 0))


def pretrain(params: PretrainParams, progress: Progress | None = None) -> dict[str, Any]:
    progress = progress or silent()
    ctx = init_distributed(params.device)
    try:
        return _pretrain(params, ctx, progress)
    finally:
        shutdown(ctx)


def _pretrain(params: PretrainParams, ctx: DistContext, progress: Progress) -> dict[str, Any]:
    if params.config not in CONFIGS:
        raise GfmError(f"unknown --config {params.config!r}; use one of {', '.join(CONFIGS)}")
    pile = GeoPile(params.pile_dir)
    img_size = CONFIGS[params.config].img_size
    if pile.chip_size < img_size:
        raise InputError(params.pile_dir, f"chips are {pile.chip_size} px; the {params.config} "
                         f"model trains at {img_size} px (rebuild with --chip {img_size})")
    steps_per_epoch = pile.steps_per_epoch(params.batch, ctx.world)
    if steps_per_epoch < 1:
        raise InputError(params.pile_dir, f"only {len(pile)} chips: not one batch of "
                         f"{params.batch} per process (lower --batch)")
    teacher = _teacher_arg(params)
    previous = latest_checkpoint(params.out)
    if params.resume and previous is None:
        raise InputError(params.out, "has no checkpoint to resume from")
    inputs = {"GeoPile": params.pile_dir, "teacher": teacher}
    run_dir = check_output_dir(params.out, PRETRAIN, params.overwrite, inputs, continuing=params.resume)
    barrier(ctx)  # every rank has looked before the main one writes
    if not ctx.is_main:
        return _train(params, ctx, progress, pile, run_dir, teacher, previous)
    prepare_in_place(run_dir, PRETRAIN, params.overwrite, params.resume, inputs)
    created = not run_dir.exists()
    lock = acquire(run_dir)
    try:
        result = _train(params, ctx, progress, pile, run_dir, teacher, previous)
        write_manifest(run_dir, PRETRAIN, [p.name for p in run_dir.iterdir() if PRETRAIN.owns(p.name)])
        return result
    finally:
        release(run_dir, lock, created)


@dataclass
class _Run:
    """A pretraining run in memory: the model and its optimiser, schedule, RNG and position."""

    params: PretrainParams
    ctx: DistContext
    pile: GeoPile
    run_dir: Path
    model: Any
    optimizer: torch.optim.Optimizer
    schedule: WarmupCosineSchedule
    generator: torch.Generator
    total: int
    warmup: int
    lrs: Lrs
    step: int = 0
    epoch: int = 0
    start: int = 0
    seen: list[np.ndarray] = field(default_factory=list)

    def checkpoint(self) -> None:
        states = _gather_rng(self.ctx, rng_state(self.generator))
        if self.ctx.is_main:
            save_checkpoint(self.run_dir, self.step, self.model, {
                "step": self.step, "position": (self.epoch, self.start),
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "rng": states, "pile": self.pile.fingerprint,
            }, metadata={"step": self.step})
        barrier(self.ctx)

    def resume_from(self, previous: Path) -> None:
        from safetensors.torch import load_file

        state = load_state(previous)
        if state.get("pile") != self.pile.fingerprint:
            log.warning("the GeoPile changed since the checkpoint (%s -> %s); the data order "
                        "restarts at the saved epoch", state.get("pile"), self.pile.fingerprint)
        self.model.load_state_dict(load_file(str(previous / "model.safetensors"),
                                             device=str(self.ctx.device)), strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.step, (self.epoch, self.start) = int(state["step"]), tuple(state["position"])
        rng = state["rng"][self.ctx.rank] if isinstance(state["rng"], list) else state["rng"]
        set_rng_state(rng, self.generator)
        log.info("resuming %s at step %d (epoch %d, batch %d)", self.run_dir, self.step,
                 self.epoch, self.start)

    def batches(self) -> Iterator[Any]:
        """The rank's batches from the saved position on, epoch after epoch."""
        p = self.params
        while True:
            yield from self.pile.batches(p.batch, self.ctx.rank, self.ctx.world, self.epoch,
                                         p.seed, start=self.start, prefetch=2)
            self.epoch, self.start = self.epoch + 1, 0


def _new_run(params: PretrainParams, ctx: DistContext, pile: GeoPile, run_dir: Path,
             teacher: str | None) -> _Run:
    torch.manual_seed(params.seed)
    model = build_pretrainer(params.config, teacher=teacher).to(ctx.device)
    model.train()
    set_attention(model, resolve_attention(params.attention, ctx.device))
    lrs = linear_scaled_lrs(params.batch * ctx.world)
    total, warmup = _schedule(params, pile.steps_per_epoch(params.batch, ctx.world))
    optimizer = build_optimizer(model, lr=lrs.base)
    schedule = WarmupCosineSchedule(optimizer, total_steps=total, warmup_steps=warmup,
                                    base_lr=lrs.base, warmup_lr=lrs.warmup, min_lr=lrs.minimum)
    generator = torch.Generator(device=ctx.device)
    generator.manual_seed(params.seed * 1000 + ctx.rank)
    return _Run(params, ctx, pile, run_dir, model, optimizer, schedule, generator, total, warmup,
                lrs)


def _write_run_json(run: _Run, teacher: str | None) -> None:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run.run_dir / "run.json", json.dumps({
        "params": run.params.model_dump(mode="json"),
        "world": run.ctx.world, "pile": run.pile.fingerprint, "chips": len(run.pile),
        "model": run.model.config.to_json(), "teacher": teacher, "total_steps": run.total,
        "warmup_steps": run.warmup, "lr": run.lrs._asdict()}, indent=2))


def _train(params: PretrainParams, ctx: DistContext, progress: Progress, pile: GeoPile,
           run_dir: Path, teacher: str | None, previous: Path | None) -> dict[str, Any]:
    run = _new_run(params, ctx, pile, run_dir, teacher)
    if params.resume and previous is not None:
        run.resume_from(previous)
    if params.compile_blocks:  # after loading: compiled blocks keep their state-dict keys
        compile_blocks(run.model)
    net = run.model
    if ctx.distributed:
        net = DistributedDataParallel(run.model, device_ids=[ctx.device.index] if
                                      ctx.device.type == "cuda" else None, broadcast_buffers=False)
    if ctx.is_main:
        _write_run_json(run, teacher)
    t_start = time.perf_counter()
    try:
        _steps(run, net, progress)
    except Cancelled:
        run.checkpoint()  # a cancelled run resumes from where it stopped
        raise
    except torch.cuda.OutOfMemoryError as exc:
        raise GfmError(f"a batch of {params.batch} does not fit in GPU memory; lower --batch "
                       f"(the last checkpoint in {run_dir} is intact)") from exc
    run.checkpoint()
    return _finish(run, time.perf_counter() - t_start, progress)


def _steps(run: _Run, net: Any, progress: Progress) -> None:
    """Train until the run's last step, logging metrics and checkpointing as asked."""
    p, ctx = run.params, run.ctx
    img_size = CONFIGS[p.config].img_size
    masks = MaskGenerator(input_size=img_size)
    bf16 = ctx.device.type == "cuda" if p.bf16 is None else p.bf16
    window_t, window_n = time.perf_counter(), 0
    if run.step >= run.total:
        return
    for batch in run.batches():
        progress.check()
        chips = torch.from_numpy(batch.images).to(ctx.device, non_blocking=True)
        out = train_step(net, run.model, run.optimizer, chips, img_size, masks, run.generator, bf16)
        lr = run.optimizer.param_groups[0]["lr"]
        run.schedule.step()
        run.step += 1
        run.epoch, run.start = batch.next_position
        window_n += chips.shape[0]
        if p.record_chips:
            run.seen.append(batch.indices.copy())
        if run.step % p.log_every == 0 or run.step == run.total:
            now = time.perf_counter()
            _log_metrics(ctx, run.run_dir, run.step, run.epoch, out, lr,
                         window_n * ctx.world / max(now - window_t, 1e-9))
            window_t, window_n = now, 0
        progress(run.step / run.total, f"step {run.step}/{run.total} loss "
                 f"{float(out['loss'].detach()):.4f}")
        if run.step >= run.total:
            break
        if run.step % p.checkpoint_every == 0:
            run.checkpoint()


def _finish(run: _Run, elapsed: float, progress: Progress) -> dict[str, Any]:
    """The encoder file, the loss plot and the summary."""
    ctx, run_dir = run.ctx, run.run_dir
    if run.params.record_chips:
        _record(ctx, run_dir, run.seen, run.model)
    result = {"run_dir": str(run_dir), "steps": run.step, "epoch": run.epoch,
              "seconds": round(elapsed, 2)}
    if ctx.is_main:
        save_encoder(run.model.encoder, run_dir / ENCODER_FILE,
                     extra_metadata={"source": "gfm pretrain", "step": str(run.step)})
        _loss_plot(run_dir)
        result["encoder"] = str(run_dir / ENCODER_FILE)
    barrier(ctx)
    progress(1.0, "done")
    return result


def _gather_rng(ctx: DistContext, state: dict[str, Any]) -> list[dict[str, Any]] | dict[str, Any]:
    """Every rank's RNG state goes into the checkpoint, so each rank resumes its own stream."""
    if not ctx.distributed:
        return state
    import torch.distributed as dist

    states: list[Any] = [None] * ctx.world
    dist.all_gather_object(states, state)
    return states


def _log_metrics(ctx: DistContext, run_dir: Path, step: int, epoch: int, out: dict, lr: float,
                 images_per_s: float) -> None:
    vals = all_mean(ctx, torch.stack([out["loss"].detach().float(), out["loss_mim"].detach().float(),
                                      out["loss_distill"].detach().float()]))
    if not ctx.is_main:
        return
    record = {"step": step, "epoch": epoch, "loss": float(vals[0]), "loss_mim": float(vals[1]),
              "loss_distill": float(vals[2]), "lr": lr, "images_per_s": round(images_per_s, 2)}
    with open(run_dir / METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _record(ctx: DistContext, run_dir: Path, seen: list[np.ndarray], model) -> None:
    digest = hashlib.sha256()
    for _, v in sorted(model.state_dict().items()):
        digest.update(v.detach().float().cpu().numpy().tobytes())
    path = run_dir / "ranks" / f"rank{ctx.rank}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    chips = np.concatenate(seen).tolist() if seen else []
    path.write_text(json.dumps({"rank": ctx.rank, "chips": chips,
                                "weights_sha256": digest.hexdigest()}), encoding="utf-8")


def _loss_plot(run_dir: Path) -> None:
    path = run_dir / METRICS
    if not path.exists():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key in ("loss", "loss_mim", "loss_distill"):
        ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=key)
    ax.set_xlabel("step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "loss.png")
    plt.close(fig)


def export_encoder(run_dir: Path, out: Path) -> Path:
    """`gfm export-encoder`: the student of the latest checkpoint, as a load_encoder file."""
    from ..models import load_pretrainer

    ckpt = latest_checkpoint(Path(run_dir))
    if ckpt is None:
        raise InputError(run_dir, "no pretraining checkpoint found")
    model = load_pretrainer(ckpt / "model.safetensors")
    return save_encoder(model.encoder, Path(out), extra_metadata={"source": str(ckpt)})
