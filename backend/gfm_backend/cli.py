"""The `gfm` command: thin argument parsing around the task functions."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come only from files the user names

from . import __version__  # noqa: E402
from .cli_jobs import add_job_command, run_job_command  # noqa: E402
from .errors import Cancelled, GfmError, environment_problem  # noqa: E402
from .progress import Progress  # noqa: E402
from .runtime.predictors import RUNTIMES  # noqa: E402
from .service.cli_commands import (  # noqa: E402
    add_jobs,
    add_serve,
    add_users,
    run_jobs,
    run_serve,
    run_users,
)
from .tasks.geopile_cli import add_geopile, run_geopile  # noqa: E402
from .tasks.pretrain_cli import (  # noqa: E402
    add_export_encoder,
    add_pretrain,
    run_export_encoder,
    run_pretrain,
)
from .tasks.weights_cli import add_weights, run_weights  # noqa: E402


def _terminal_progress(tty: bool, quiet: bool) -> tuple[Progress, Callable[[], None]]:
    """A tqdm bar on a terminal; elsewhere (logs, pipes) a line every 10 %."""
    if quiet:
        return Progress(), lambda: None
    if not tty:
        last = [-1]

        def log_line(fraction: float, message: str) -> None:
            step = int(fraction * 10)
            if step != last[0]:
                last[0] = step
                logging.getLogger("gfm").info("%3d%% %s", int(fraction * 100), message)

        return Progress(report=log_line), lambda: None
    from tqdm import tqdm

    bar = tqdm(total=1000, bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}",
               file=sys.stderr, dynamic_ncols=True)

    def report(fraction: float, message: str) -> None:
        bar.n = int(fraction * 1000)
        bar.set_postfix_str(message[:60], refresh=False)
        bar.refresh()

    return Progress(report=report), bar.close


def _job(name: str, help: str) -> tuple[Callable[..., None], Callable[..., dict[str, Any]]]:
    """A command made from a job type: options from its parameter model, run by its runner."""
    return ((lambda sub: add_job_command(sub, name, help)),
            (lambda a, progress: run_job_command(name, a, progress)))


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="fine-tune and classify a synthetic scene, and detect "
                       "changes in a synthetic pair, end to end")
    p.add_argument("--out", type=Path, default=Path("demo-out"))
    p.add_argument("--device", default="auto")
    p.add_argument("--task", choices=("all", "classify", "change"), default="all",
                   help="which demo to run (default: both)")


def _run_demo(a: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .tasks.demo import demo
    from .tasks.demo_change import demo_change

    result: dict[str, Any] = {"outputs": str(a.out)}
    both = a.task == "all"
    if a.task in ("all", "classify"):
        r = demo(a.out, device=a.device, progress=progress.span(0, 0.5 if both else 1))
        acc = r["accuracy_on_pixels_not_drawn"]
        result |= {"overall_accuracy_on_pixels_not_drawn": acc["overall_accuracy"],
                   "mean_iou": acc["mean_iou"], "preview": str(Path(a.out) / "preview.png")}
    if a.task in ("all", "change"):
        c = demo_change(Path(a.out) / "change", device=a.device,
                        progress=progress.span(0.5 if both else 0, 1))
        result["change"] = {"f1_on_unseen_part": c["scores_on_unseen_right_part"]["change"]["f1"],
                            "preview": str(Path(a.out) / "change" / "change_preview.png")}
    return result


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (speed and memory)")
    p.add_argument("what", choices=("classify", "change", "pretrain", "accuracy"))
    p.add_argument("--out", type=Path, default=Path("bench-out"))
    p.add_argument("--size", type=int, default=4096, help="classify, change: raster width and height (px)")
    p.add_argument("--configs", nargs="+", default=["tiny", "base"],
                   help="classify, change, accuracy: encoders (accuracy: the random-init "
                   "shapes, besides the weights installed)")
    p.add_argument("--runtimes", nargs="+", default=list(RUNTIMES),
                   help="classify, change: runtimes (each against the reference: training-chip "
                   "tiles, fp32 torch)")
    p.add_argument("--tiles", nargs="+", choices=("inference", "training"),
                   default=["inference", "training"], help="classify, change: run each runtime "
                   "at the package's inference tiles, at its training chips, or both")
    p.add_argument("--repeat", type=int, default=1,
                   help="classify, change: runs of each side, the best counts (noisy machines)")
    p.add_argument("--config", default="base", help="pretrain: encoder config")
    p.add_argument("--batch", type=int, default=128, help="pretrain: images per step")
    p.add_argument("--steps", type=int, default=10, help="pretrain: timed steps")
    p.add_argument("--no-teacher", action="store_true", help="pretrain: MIM only")
    p.add_argument("--pile", type=Path, help="pretrain: read chips from this GeoPile (and time "
                   "the loader alone); default: synthetic chips on the device")
    p.add_argument("--attention", choices=("auto", "eager", "sdpa"), default="auto",
                   help="pretrain: window attention path (auto: sdpa on CUDA)")
    p.add_argument("--compile-blocks", action="store_true",
                   help="pretrain: torch.compile each Swin block; reports the warm-up time")
    p.add_argument("--device", default=None, help="default: cpu for classify, auto for pretrain")
    p.add_argument("--data", type=Path, default=None, help="accuracy: the real samples' folder "
                   "(default: $GFM_REAL_DATA)")
    p.add_argument("--epochs", type=int, default=8, help="accuracy: epochs of each full fine-tune")
    p.add_argument("--chips", type=int, default=48, help="accuracy: training chips per fine-tune")
    p.add_argument("--no-analyst", action="store_true",
                   help="accuracy: skip the simulated analyst (suggestions against random)")


def _run_bench(a: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .tasks.bench import bench_classify, bench_pretrain

    if a.what == "accuracy":
        from .tasks.bench_accuracy import bench_accuracy

        return bench_accuracy(a.out, data=a.data, configs=a.configs, epochs=a.epochs,
                              chips=a.chips, analyst=not a.no_analyst, progress=progress)
    if a.what == "pretrain":
        return bench_pretrain(a.config, batch=a.batch, steps=a.steps, device=a.device or "auto",
                              teacher=not a.no_teacher, attention=a.attention,
                              compile_blocks=a.compile_blocks, pile=a.pile, progress=progress)
    task = "change_detection" if a.what == "change" else "segmentation"
    return bench_classify(a.out, size=a.size, configs=a.configs, runtimes=a.runtimes,
                          device=a.device or "cpu", repeat=a.repeat, progress=progress, task=task,
                          tiles=a.tiles)


AddFn = Callable[[Any], None]
RunFn = Callable[[argparse.Namespace, Progress], dict[str, Any]]
COMMANDS: dict[str, tuple[AddFn, RunFn]] = {
    "classify": _job("classify", "classify a raster with a model package"),
    "finetune": _job("finetune", "train a model package on polygons drawn over rasters"),
    "export": _job("export", "write the ONNX file of a model package"),
    "finetune-change": _job("finetune-change", "train a change model on polygons drawn where "
                            "something changed between two dates"),
    "detect-change": _job("detect-change", "map what changed between two dates (BEFORE's grid)"),
    "suggest": _job("suggest", "propose places to draw the next training polygons"),
    "demo": (_add_demo, _run_demo),
    "bench": (_add_bench, _run_bench),
    "geopile": (add_geopile, run_geopile),
    "pretrain": (add_pretrain, run_pretrain),
    "export-encoder": (add_export_encoder, run_export_encoder),
    "weights": (add_weights, run_weights),
    "serve": (add_serve, run_serve),
    "jobs": (add_jobs, run_jobs),
    "users": (add_users, run_users),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gfm", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gfm {__version__}")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def _interrupt_on_sigterm() -> None:
    """`kill` stops a command like Ctrl-C does, so staged partial outputs are removed."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve":  # the service handles its own shutdown
        _interrupt_on_sigterm()
    logging.basicConfig(level=logging.WARNING, format="gfm: %(message)s")
    for name in ("gfm", "gfm_backend"):  # our messages only; libraries stay at warnings
        logging.getLogger(name).setLevel(logging.WARNING if args.quiet else logging.INFO)
    progress, close = _terminal_progress(sys.stderr.isatty(), args.quiet)
    try:
        result = COMMANDS[args.command][1](args, progress)
    except Cancelled as exc:
        close()
        print(f"gfm: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        close()
        print("gfm: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    except GfmError as exc:
        close()
        print(f"gfm: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: say so plainly, traceback only on request
        close()
        problem = environment_problem(exc)
        if problem is not None and not args.debug:
            print(f"gfm: error: {problem}", file=sys.stderr)
            return 2
        if args.debug:
            raise
        print(f"gfm: internal error: {type(exc).__name__}: {exc} (rerun with --debug for "
              "the traceback)", file=sys.stderr)
        return 3
    close()
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
