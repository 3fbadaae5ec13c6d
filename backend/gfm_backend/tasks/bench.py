"""`gfm bench classify` and `gfm bench change`: end-to-end throughput against the network alone.

For each encoder config and runtime: end-to-end MPix/s of a real `gfm classify` (or
`gfm detect-change`) run (in a child process, so its peak RSS is its own; the one-off
model load and the vectorizing are timed apart), model-only MPix/s of the same number of
tiles through the network alone (for a change model: both dates, two encoder passes per
tile), their ratio, and peak RSS. Figures, not tests.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from ..data.synthetic import SCENE_CLASSES
from ..errors import GfmError, InputError
from ..models import CONFIGS, build_encoder
from ..package import read_spec
from ..progress import Progress, silent
from ..runtime import make_predictor
from ..runtime.predictors import RUNTIMES
from .bench_inputs import (
    BenchModels,
    bench_truth,
    make_bench_after,
    make_bench_models,
    make_bench_raster,
)
from .metrics import confusion, summarize


def _model_only(model_dir: Path, runtime: str, device: str, tiles: int, batch: int) -> float:
    """Seconds to push `tiles` tiles through the network alone (after one warm-up batch)."""
    spec = read_spec(model_dir).for_inference()
    predictor = make_predictor(model_dir, spec, runtime, device, batch)
    x = np.random.default_rng(0).standard_normal(  # a change model: both dates' channels
        (batch, spec.input_channels, spec.tile_size, spec.tile_size)).astype(np.float32)
    predictor(x)
    t0 = time.perf_counter()
    done = 0
    while done < tiles:
        n = min(batch, tiles - done)
        predictor(x[:n])
        done += n
    return time.perf_counter() - t0


def _job_run(inputs: list[Path], model: Path, result_dir: Path, runtime: str, device: str,
             batch: int) -> tuple[dict[str, Any], float]:
    """A real `gfm classify RASTER` (or `gfm detect-change BEFORE AFTER`) in a child
    process: its report and wall seconds."""
    command = "classify" if len(inputs) == 1 else "detect-change"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "gfm_backend.cli", "--quiet", command, *map(str, inputs),
         "--model", str(model), "--out", str(result_dir), "--runtime", runtime,
         "--device", device, "--batch-size", str(batch), "--overwrite"],
        capture_output=True, text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:  # the child said why, in its own last line
        said = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise GfmError(f"the bench's {command} of {model.name} with --runtime {runtime} "
                       f"failed: {said[-1].removeprefix('gfm: error: ')}")
    return json.loads((result_dir / "report.json").read_text()), wall


def _streaming_s(report: dict[str, Any]) -> float:
    """Seconds of streaming (read, infer, blend, write): the one-off model load and the
    vectorizing are reported apart."""
    t = report["timings_s"]
    return t["total"] - t.get("vectorize", 0.0) - t.get("load_model", 0.0)


REFERENCE = "torch"  # today's path: the training chips as tiles, fp32 torch


def bench_classify(out: Path, size: int = 4096, configs: list[str] | None = None,
                   runtimes: list[str] | None = None, device: str = "cpu", batch: int = 8,
                   repeat: int = 1, progress: Progress | None = None,
                   task: str = "segmentation", tiles: list[str] | None = None) -> dict[str, Any]:
    """For each config: the reference (training-chip tiles, torch fp32), then each runtime
    at each of `tiles` (the package's "inference" tiles, the "training" chips), with
    `speedup_vs_reference` (end to end) and `agreement_vs_reference` (share of equal class
    pixels). `task` change_detection benches `gfm detect-change` on a pair of `size` px dates."""
    progress = progress or silent()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    raster = make_bench_raster(out / f"bench_{size}.tif", size)
    inputs = [raster] if task == "segmentation" else [
        raster, make_bench_after(raster, out / f"bench_{size}_after.tif")]
    rows = []
    configs = configs or ["tiny", "base"]
    truth = bench_truth(size) if task == "segmentation" else None
    for i, config in enumerate(configs):
        progress(i / len(configs), config)
        bench = _Bench(inputs, make_bench_models(out, config, task), out, device, batch,
                       repeat, size * size / 1e6, truth)
        rows.extend(_config_rows(bench, config, runtimes or list(BENCH_RUNTIMES),
                                 tiles or list(BENCH_TILES)))
    progress(1.0, "done")
    result = {"raster": str(raster), "size": size, "device": device, "task": task, "results": rows}
    name = "bench_classify.json" if task == "segmentation" else "bench_change.json"
    (out / name).write_text(json.dumps(result, indent=2))
    return result


BENCH_RUNTIMES = RUNTIMES
BENCH_TILES = ("inference", "training")


def _config_rows(bench: _Bench, config: str, runtimes: list[str],
                 tiles: list[str]) -> list[dict[str, Any]]:
    """The reference, then every runtime at every tile kind, each against the reference."""
    reference = bench.measure(f"{config}_reference", REFERENCE, bench.models.chip)
    rows = [reference | {"config": config, "reference": True}]
    for kind in tiles:
        for runtime in runtimes:
            if kind == "training" and runtime == REFERENCE:
                continue  # that is the reference
            name = f"{config}_{runtime}" + ("_chip" if kind == "training" else "")
            model = bench.models.chip if kind == "training" else bench.models.inference
            row = bench.measure(name, runtime, model)
            row["speedup_vs_reference"] = round(
                row["end_to_end_mpix_s"] / reference["end_to_end_mpix_s"], 3)
            row["agreement_vs_reference"] = _agreement(bench.result(f"{config}_reference"),
                                                       bench.result(name))
            if "iou_vs_truth" in row:  # the largest change of a class's IoU, in points
                row["iou_points_vs_reference"] = round(max(
                    abs(row["iou_vs_truth"][c] - iou) for c, iou
                    in reference["iou_vs_truth"].items()) * 100, 2)
            rows.append(row | {"config": config, "reference": False})
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


@dataclass
class _Bench:
    """One encoder's runs: a real job in a child process, then the network alone."""

    inputs: list[Path]
    models: BenchModels
    out: Path
    device: str
    batch: int
    repeat: int
    mpix: float
    truth: np.ndarray | None = None  # the bench raster's true classes (segmentation)

    def result(self, name: str) -> Path:
        kind = "classified" if len(self.inputs) == 1 else "changes"
        return self.out / f"{kind}_{name}"

    def measure(self, name: str, runtime: str, model: Path) -> dict[str, Any]:
        # best of `repeat` for each side: on a shared machine the slow runs measure the
        # neighbours, and alternating the two sides exposes both to the same conditions
        runs = []
        for _ in range(max(self.repeat, 1)):
            report, wall = _job_run(self.inputs, model, self.result(name), runtime,
                                    self.device, self.batch)
            runs.append((report, wall, _model_only(model, runtime, self.device,
                                                   report["tiles"], self.batch)))
        report, wall, _ = min(runs, key=lambda r: _streaming_s(r[0]))
        raster_s, model_s = _streaming_s(report), min(r[2] for r in runs)
        scores = {} if self.truth is None else {
            "iou_vs_truth": _iou_vs_truth(self.result(name), report, self.truth)}
        return scores | {
            "runtime": runtime, "tile_px": report["tile_size_px"], "tiles": report["tiles"],
            "repeat": len(runs), "end_to_end_mpix_s": round(self.mpix / raster_s, 3),
            "model_only_mpix_s": round(self.mpix / model_s, 3),
            "ratio": round(model_s / raster_s, 3),
            "vectorize_s": round(report["timings_s"].get("vectorize", 0.0), 2),
            "load_model_s": round(report["timings_s"].get("load_model", 0.0), 2),
            "process_wall_s": round(wall, 1), "peak_rss_mb": report.get("peak_rss_mb"),
        }


def _iou_vs_truth(result: Path, report: dict[str, Any], truth: np.ndarray) -> dict[str, float]:
    """Each class's IoU against the bench scene's truth (the model's classes by name)."""
    with rasterio.open(result / "classes.tif") as ds:
        classes = ds.read(1)
    names = [c["name"] for c in report["classes"]]
    to_scene = np.full(256, 255, np.uint8)
    to_scene[: len(names)] = [SCENE_CLASSES.index(n) for n in names]
    scores = summarize(confusion(to_scene[classes], truth, len(SCENE_CLASSES)), list(SCENE_CLASSES))
    return {name: round(c["iou"], 4) for name, c in scores["per_class"].items()}


def _agreement(reference: Path, other: Path) -> float:
    """Share of the pixels where two runs' class rasters agree (read block by block)."""
    name = "classes.tif" if (reference / "classes.tif").exists() else "change.tif"
    same = total = 0
    with rasterio.open(reference / name) as a, rasterio.open(other / name) as b:
        for _, window in a.block_windows(1):
            x, y = a.read(1, window=window), b.read(1, window=window)
            same += int((x == y).sum())
            total += x.size
    return round(same / max(total, 1), 5)


def bench_pretrain(config: str = "base", batch: int = 128, steps: int = 10, warmup: int = 2,
                   device: str = "auto", teacher: bool = True, attention: str = "auto",
                   compile_blocks: bool = False, pile: Path | None = None,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Time GFM training steps (augment, mask, forward, backward, AdamW).

    Chips come from the GeoPile at `pile` through the training loop's own loader, or are
    synthetic (already on the device) without one; with a pile, the loader alone (read,
    copy to the device) is timed too, to show whether it could ever limit the step rate.
    FLOPs are counted once with torch's FlopCounterMode (matmuls and convolutions of the
    forward and backward pass), so TFLOP/s is what the step really asks of the device.
    """
    import torch

    progress = progress or silent()
    bench = _bench_setup(config, batch, device, teacher, attention, pile)
    dev = bench.device
    flops_per_step, compile_s = bench.count_flops(), None
    if compile_blocks:
        compile_s = bench.compile()
    for _ in range(warmup):
        bench.step()
    bench.sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for i in range(steps):
        bench.step()
        progress((i + 1) / steps, f"step {i + 1}/{steps}")
    bench.sync()
    seconds = time.perf_counter() - t0
    result = {
        "config": config, "batch": batch, "device": str(dev), "teacher": teacher,
        "attention": bench.attention, "compiled_blocks": compile_blocks,
        "data": str(pile) if pile else "synthetic",
        "steps": steps, "images_per_s": round(batch * steps / seconds, 2),
        "gflop_per_image": round(flops_per_step / batch / 1e9, 2),
        "achieved_tflop_s": round(flops_per_step * steps / seconds / 1e12, 3),
        "bf16": bench.bf16,
    }
    if compile_s is not None:
        result["compile_s"] = round(compile_s, 1)
    if bench.pile is not None:
        result["loader_images_per_s"] = round(_loader_rate(bench.pile, batch, steps, dev), 2)
    if dev.type == "cuda":
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
        result["gpu"] = torch.cuda.get_device_name(dev)
    return result


@dataclass
class _PretrainBench:
    """A pretrainer, its optimiser and a chip source, stepped by the training loop's step."""

    device: Any
    model: Any
    optimizer: Any
    chips: Iterator
    img_size: int
    masks: Any
    generator: Any
    bf16: bool
    attention: str
    pile: Any

    def step(self) -> None:  # the training loop's own step, not a copy of it
        from ..training.step import train_step

        train_step(self.model, self.model, self.optimizer, next(self.chips), self.img_size,
                   self.masks, self.generator, self.bf16)

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def count_flops(self) -> int:
        """FLOPs of one step (matmuls and convolutions, forward and backward)."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self.step()
        return counter.get_total_flops()

    def compile(self) -> float:
        """Compile each Swin block; returns the seconds the first (compiling) step took."""
        from ..training.speed import compile_blocks

        compile_blocks(self.model)
        t0 = time.perf_counter()
        self.step()
        self.sync()
        return time.perf_counter() - t0


def _bench_setup(config: str, batch: int, device: str, teacher: bool, attention: str,
                 pile: Path | None) -> _PretrainBench:
    import torch

    from ..models import build_pretrainer
    from ..models.masking import MaskGenerator
    from ..models.pretrainer import teacher_config
    from ..runtime import resolve_device
    from ..training.optim import build_optimizer
    from ..training.speed import resolve_attention, set_attention

    dev = resolve_device(device)
    cfg = CONFIGS[config]
    geopile = _open_pile(pile, batch, cfg.img_size) if pile is not None else None  # fail early
    teacher_net = build_encoder(teacher_config(cfg)) if teacher else None
    model = build_pretrainer(config, teacher=teacher_net).to(dev).train()
    attention = resolve_attention(attention, dev)
    set_attention(model, attention)
    gen = torch.Generator(device=dev)
    gen.manual_seed(0)
    if geopile is not None:
        chips: Iterator = _pile_chips(geopile, batch, dev)
    else:  # one synthetic batch, already on the device
        chips = itertools.repeat(torch.randint(0, 256, (batch, 3, cfg.img_size, cfg.img_size),
                                               dtype=torch.uint8, device=dev, generator=gen))
    return _PretrainBench(dev, model, build_optimizer(model, lr=1e-4), chips, cfg.img_size,
                          MaskGenerator(input_size=cfg.img_size), gen, dev.type == "cuda",
                          attention, geopile)


def _open_pile(pile: Path, batch: int, img_size: int) -> Any:
    """The GeoPile, checked to hold at least one batch of large enough chips."""
    from ..data.geopile_reader import GeoPile

    geopile = GeoPile(pile)
    if geopile.chip_size < img_size or geopile.steps_per_epoch(batch) < 1:
        raise InputError(pile, f"needs at least {batch} chips of {img_size} px or more "
                         f"(has {len(geopile)} of {geopile.chip_size} px)")
    return geopile


def _pile_chips(geopile: Any, batch: int, dev) -> Iterator:
    """uint8 chip batches on the device, as `gfm pretrain` reads them, epoch after epoch."""
    import torch

    for epoch in itertools.count():
        for b in geopile.batches(batch, epoch=epoch, prefetch=2):
            yield torch.from_numpy(b.images).to(dev, non_blocking=True)


def _loader_rate(geopile: Any, batch: int, steps: int, dev) -> float:
    """Images/s of the loader alone: GeoPile batches copied to the device, nothing else."""
    import torch

    source = _pile_chips(geopile, batch, dev)
    next(source)  # opens the shards and starts the prefetch thread
    t0 = time.perf_counter()
    for _ in range(steps):
        next(source)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return batch * steps / (time.perf_counter() - t0)
