"""What the service computes on: probed once, in a child process, so the server itself
never loads torch or creates a CUDA context (that memory belongs to the jobs)."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("gfm_backend.service")
PROBE_TIMEOUT_S = 180

_PROBE = r"""
import json, torch
gpus = []
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        free, total = torch.cuda.mem_get_info(i)
        gpus.append({"type": "cuda", "index": i, "name": p.name,
                     "memory_total_mb": round(total / 2**20), "memory_free_mb": round(free / 2**20),
                     "capability": f"{p.major}.{p.minor}"})
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": gpus}))
"""


def cpu_device() -> dict[str, Any]:
    info: dict[str, Any] = {"type": "cpu", "name": platform.processor() or platform.machine(),
                            "cores": os.cpu_count()}
    try:
        info["memory_total_mb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20)
    except (ValueError, OSError, AttributeError):
        pass
    return info


def disk_free_gb(path: Path) -> float:
    return round(shutil.disk_usage(path).free / 1e9, 2)


class DeviceProbe:
    """Runs the probe in the background at startup; `snapshot()` is what /health shows."""

    def __init__(self) -> None:
        self._result: dict[str, Any] | None = None
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name="gfm-device-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                                 timeout=PROBE_TIMEOUT_S, check=True)
            self._result = json.loads(out.stdout.strip().splitlines()[-1])
        except Exception as exc:  # never fatal: the service still runs CPU jobs
            err = getattr(exc, "stderr", "") or ""
            self._error = f"{type(exc).__name__}: {str(exc)[:200]} {err[-300:]}".strip()
            log.warning("device probe failed (%s); assuming the CPU", self._error)
        log.info("device: %s", self.describe())

    def describe(self) -> str:
        """One line for the log: the device GPU-lane jobs with device 'auto' will use."""
        if self._result is None:
            return "CPU (device probe failed)" if self._error else "probing..."
        gpus = self._result["gpus"]
        if not gpus:
            return (f"CPU ({cpu_device()['cores']} cores); torch {self._result['torch']} sees no "
                    "CUDA GPU, so jobs with device 'auto' run on the CPU")
        names = ", ".join(f"cuda:{g['index']} {g['name']} ({g['memory_total_mb'] / 1024:.0f} GiB)"
                          for g in gpus)
        return f"CUDA {self._result['cuda']}: {names}"

    def snapshot(self) -> dict[str, Any]:
        gpus = self._result["gpus"] if self._result else []
        return {
            "devices": [*gpus, cpu_device()],
            "default_device": "cuda:0" if gpus else "cpu",
            "device_probe": ("done" if self._result else "failed" if self._error else "running"),
            "torch": self._result.get("torch") if self._result else None,
        }
