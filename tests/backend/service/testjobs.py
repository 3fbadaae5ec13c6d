"""Job types that exist only for the tests, plugged into the real server through
$GFM_SERVICE_PLUGINS (the hook any site can use): a resumable job that checkpoints, a
job that crashes in the ways real jobs do, one that ignores cancel, one that says where it
was placed, and the real classify computing on the CPU where it was placed on a GPU."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from gfm_backend.errors import InputError
from gfm_backend.parameters import Device, JobParams, Kind, StrictBool, StrictFloat, StrictInt
from gfm_backend.progress import Progress
from gfm_backend.service.jobs import CLASSIFY, CPU, GPU, JobType, register, run_classify
from gfm_backend.tasks.params import ClassifyParams


def run_steps(p: StepsParams, progress: Progress) -> dict[str, Any]:
    """Counts steps, saving a checkpoint after each; `resume` carries on from it."""
    out = Path(p.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.json"
    start = json.loads(ckpt.read_text())["step"] if p.resume and ckpt.exists() else 0
    for step in range(start, p.steps):
        progress(step / p.steps, f"step {step + 1} of {p.steps}")
        time.sleep(p.step_s)
        tmp = ckpt.with_suffix(".partial")
        tmp.write_text(json.dumps({"step": step + 1}))
        os.replace(tmp, ckpt)
    progress(1.0, "done")
    return {"out": str(out), "resumed_from": start, "steps": p.steps}


def run_crash(p: CrashParams, progress: Progress) -> dict[str, Any]:
    progress(0.5, "about to fail")
    how = p.how
    if how == "exit":
        os._exit(3)
    if how == "kill":  # what the kernel's out-of-memory killer does
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "memory":
        raise MemoryError()
    if how == "input":
        raise InputError("/data/scene.tif", "band 4 is all nodata")
    return {"result": 1 // 0}


def run_stubborn(p: StubbornParams, progress: Progress) -> dict[str, Any]:
    progress(0.1, "busy, not listening")
    time.sleep(p.seconds)
    return {}


def run_where(p: WhereParams, progress: Progress) -> dict[str, Any]:
    """Says which device it was placed on (what a GPU job would compute on)."""
    progress(0.1, f"on {p.device}")
    time.sleep(p.seconds)
    return {"device": p.device}


def run_classify_on_cpu(p: ClassifyParams, progress: Progress) -> dict[str, Any]:
    """The real classify job, on the CPU where the service placed it on a GPU (`cuda:N`):
    the GPU lanes and the split over them (ranks on gloo) tested without a GPU."""
    on_cpu = p.model_copy(update={"device": "cpu"}) if p.device.startswith("cuda") else p
    return run_classify(on_cpu, progress) | {"placed": p.device}


def _lane(p: dict[str, Any]) -> str:
    return p["lane"]


class StepsParams(JobParams):
    job: ClassVar[str] = "steps"
    out: Annotated[Path, Kind("out_dir")]
    steps: StrictInt = Field(10, ge=1)
    step_s: StrictFloat = Field(0.1, ge=0)
    resume: StrictBool = False
    lane: Literal["cpu", "gpu"] = CPU


class CrashParams(JobParams):
    job: ClassVar[str] = "crash"
    how: Literal["exit", "kill", "memory", "input", "bug"]


class WhereParams(JobParams):
    job: ClassVar[str] = "where"
    device: Device = "auto"
    seconds: StrictFloat = Field(0.5, ge=0)


class StubbornParams(JobParams):
    job: ClassVar[str] = "stubborn"
    seconds: StrictFloat = Field(60, ge=0)


register(JobType("steps", params=StepsParams, run=run_steps, resource=_lane, resumable=True))
register(JobType("crash", params=CrashParams, run=run_crash, resource=CPU))
register(JobType("stubborn", params=StubbornParams, run=run_stubborn, resource=CPU))
register(JobType("where", params=WhereParams, run=run_where, resource=GPU))
register(dataclasses.replace(CLASSIFY, name="classify-on-cpu", run=run_classify_on_cpu))
