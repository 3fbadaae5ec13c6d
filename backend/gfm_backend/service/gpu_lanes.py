"""One GPU lane per device: which GPUs the service places jobs on, and which queued job
a GPU slot may take.

`gfm serve --gpu-devices auto` (the default) counts the GPUs `nvidia-smi -L` lists (no
torch in the server), `--gpu-devices 0,1` names them, `none` keeps one lane whose jobs
pick their device themselves (what a machine without GPUs gets). Each device gets
`--gpu-jobs` slots; a job asking for `auto` or `cuda` runs on whichever device is free
and is told which (`cuda:N`), one asking for `cuda:N` waits for device N.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

ANY_GPU = (None, "auto", "cuda")


def parse_devices(text: str) -> list[int] | None:
    """`auto` -> None (probe), `none` -> [] , `0,1` -> [0, 1]."""
    text = text.strip().lower()
    if text == "auto":
        return None
    if text in ("none", ""):
        return []
    try:
        devices = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"--gpu-devices: {text!r} is not auto, none or a list like 0,1") from None
    if any(d < 0 for d in devices) or len(set(devices)) != len(devices):
        raise ValueError(f"--gpu-devices: {text!r}: give each device number once")
    return devices


def probe_devices() -> list[int]:
    """The GPUs nvidia-smi lists (none where it is missing or fails)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(m.group(1)) for m in re.finditer(r"^GPU (\d+):", listed, re.MULTILINE)]


def accepts(device: int | None, params: dict[str, Any], devices: list[int]) -> bool:
    """May a slot on `device` run a job with these params? A job pinned to a device the
    service has waits for that device's slot; any other job takes any slot."""
    if device is None:
        return True
    asked = params.get("device")
    if asked in ANY_GPU or not str(asked).startswith("cuda:"):
        return True
    pinned = int(str(asked).split(":", 1)[1])
    return pinned == device or pinned not in devices


def placed(device: int | None, params: dict[str, Any]) -> dict[str, Any]:
    """The params a job runs with on `device`: `auto`/`cuda` become `cuda:N`."""
    if device is None or "device" not in params or params["device"] not in ANY_GPU[1:]:
        return params
    return {**params, "device": f"cuda:{device}"}
