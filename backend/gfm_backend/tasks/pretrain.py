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
from ..training.augment import augment
from ..training.checkpoint import (
    latest_checkpoint,
    load_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from ..training.distributed import DistContext, all_mean, barrier, init_distributed, shutdown
from ..training.optim import GRAD_CLIP_NORM, WarmupCosineSchedule, build_optimizer, linear_scaled_lrs
from ..training.speed import compile_blocks, resolve_attention, set_attention
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


def _train(params: PretrainParams, ctx: DistContext, progress: Progress, pile: GeoPile,
           run_dir: Path, teacher: str | None, previous: Path | None) -> dict[str, Any]:
    steps_per_epoch = pile.steps_per_epoch(params.batch, ctx.world)
    img_size = CONFIGS[params.config].img_size
    torch.manual_seed(params.seed)
    model = build_pretrainer(params.config, teacher=teacher).to(ctx.device)
    model.train()
    set_attention(model, resolve_attention(params.attention, ctx.device))
    lrs = linear_scaled_lrs(params.batch * ctx.world)
    total, warmup = _schedule(params, steps_per_epoch)
    optimizer = build_optimizer(model, lr=lrs.base)
    schedule = WarmupCosineSchedule(optimizer, total_steps=total, warmup_steps=warmup,
                                    base_lr=lrs.base, warmup_lr=lrs.warmup, min_lr=lrs.minimum)
    generator = torch.Generator(device=ctx.device)
    generator.manual_seed(params.seed * 1000 + ctx.rank)
    step, epoch, start = 0, 0, 0
    if params.resume:
        state = load_state(previous)
        if state.get("pile") != pile.fingerprint:
            log.warning("the GeoPile changed since the checkpoint (%s -> %s); the data order "
                        "restarts at the saved epoch", state.get("pile"), pile.fingerprint)
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(previous / "model.safetensors"),
                                        device=str(ctx.device)), strict=True)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        step, (epoch, start) = int(state["step"]), tuple(state["position"])
        set_rng_state(state["rng"][ctx.rank] if isinstance(state["rng"], list) else state["rng"],
                      generator)
        log.info("resuming %s at step %d (epoch %d, batch %d)", run_dir, step, epoch, start)

    if params.compile_blocks:  # after loading: compiled blocks keep their state-dict keys
        compile_blocks(model)
    net = model
    if ctx.distributed:
        net = DistributedDataParallel(model, device_ids=[ctx.device.index] if
                                      ctx.device.type == "cuda" else None, broadcast_buffers=False)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "run.json", json.dumps({
            "params": params.model_dump(mode="json"),
            "world": ctx.world, "pile": pile.fingerprint, "chips": len(pile),
            "model": model.config.to_json(), "teacher": teacher, "total_steps": total,
            "warmup_steps": warmup, "lr": lrs._asdict()}, indent=2))
    masks = MaskGenerator(input_size=img_size)
    bf16 = ctx.device.type == "cuda" if params.bf16 is None else params.bf16
    seen: list[np.ndarray] = []
    position = (epoch, start)

    def checkpoint() -> None:
        states = _gather_rng(ctx, rng_state(generator))
        if ctx.is_main:
            save_checkpoint(run_dir, step, model, {
                "step": step, "position": position, "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "rng": states, "pile": pile.fingerprint,
            }, metadata={"step": step})
        barrier(ctx)

    t_start = time.perf_counter()
    window_t, window_n = time.perf_counter(), 0
    try:
        while step < total:
            for batch in pile.batches(params.batch, ctx.rank, ctx.world, epoch, params.seed,
                                      start=start, prefetch=2):
                progress.check()
                chips = torch.from_numpy(batch.images).to(ctx.device, non_blocking=True)
                images = augment(chips, img_size, generator)
                mask = masks(images.shape[0], generator=generator, device=ctx.device)
                with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=bf16):
                    out = net(images, mask)
                optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
                optimizer.step()
                lr = optimizer.param_groups[0]["lr"]
                schedule.step()
                step += 1
                position = batch.next_position
                window_n += images.shape[0]
                if params.record_chips:
                    seen.append(batch.indices.copy())
                if step % params.log_every == 0 or step == total:
                    now = time.perf_counter()
                    _log_metrics(ctx, run_dir, step, epoch, out, lr,
                                 window_n * ctx.world / max(now - window_t, 1e-9))
                    window_t, window_n = now, 0
                progress(step / total, f"step {step}/{total} loss {float(out['loss'].detach()):.4f}")
                if step % params.checkpoint_every == 0 and step < total:
                    checkpoint()
                if step >= total:
                    break
            else:
                epoch, start = epoch + 1, 0
                position = (epoch, 0)
                continue
            break
    except Cancelled:
        checkpoint()  # a cancelled run resumes from where it stopped
        raise
    except torch.cuda.OutOfMemoryError as exc:
        raise GfmError(f"a batch of {params.batch} does not fit in GPU memory; lower --batch "
                       f"(the last checkpoint in {run_dir} is intact)") from exc
    checkpoint()
    elapsed = time.perf_counter() - t_start
    if params.record_chips:
        _record(ctx, run_dir, seen, model)
    result = {"run_dir": str(run_dir), "steps": step, "epoch": epoch, "seconds": round(elapsed, 2)}
    if ctx.is_main:
        save_encoder(model.encoder, run_dir / ENCODER_FILE,
                     extra_metadata={"source": "gfm pretrain", "step": str(step)})
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
