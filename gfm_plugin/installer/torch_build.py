"""Which torch build suits this machine, and why (the reason is shown to the user).

torch 2.14's CUDA builds need NVIDIA drivers of at least: CUDA 13.0 580, CUDA 12.8 570,
CUDA 12.6 525 (CUDA 12's minor-version compatibility). On Linux x86_64 PyPI's own torch
is the CUDA 13.0 build (about 5 GB), elsewhere it is a CPU build; the other builds live
on PyTorch's index, which is used only when it answers (else pip's configured registries
are the only ones used, and the message says what that gives).
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PYTORCH_INDEX = "https://download.pytorch.org/whl/"
CUDA_BUILDS = ((580, "cu130"), (570, "cu128"), (525, "cu126"))  # (min driver, build)
PYPI_CUDA_BUILD = "cu130"  # what PyPI's Linux x86_64 wheel is built with


@dataclass(frozen=True)
class TorchChoice:
    build: str  # cpu, cu126, cu128, cu130, or "pypi" (PyPI's own build for the platform)
    index_url: str | None  # an extra index for pip; None: the configured registries only
    reason: str


def nvidia_driver() -> tuple[str, str] | None:
    """(driver version, GPU name) when an NVIDIA driver answers."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=driver_version,name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=15)
            first = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
            if "," in first:
                version, name = (part.strip() for part in first.split(",", 1))
                return version, name
        except (OSError, subprocess.TimeoutExpired):
            pass
    proc = Path("/proc/driver/nvidia/version")
    if proc.is_file():
        found = re.search(r"Kernel Module\s+([\d.]+)", proc.read_text(errors="replace"))
        if found:
            return found.group(1), "NVIDIA GPU"
    return None


def reachable(url: str, timeout_s: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):  # noqa: S310 (https only)
            return True
    except Exception:  # offline, DNS, proxy, TLS: all mean "not from here"
        return False


def _cuda_build(driver: str) -> str | None:
    major = int(driver.split(".")[0]) if driver.split(".")[0].isdigit() else 0
    return next((build for minimum, build in CUDA_BUILDS if major >= minimum), None)


def choose(override: str | None = "auto", *, system: str = sys.platform,
           machine: str = platform.machine(), driver: tuple[str, str] | None | str = "ask",
           is_reachable: Callable[[str], bool] = reachable) -> TorchChoice:
    """The build for this machine; `override`: "auto", "none" (configured registries only)
    or an index URL. `driver`: (version, GPU name), None for none, "ask" the machine."""
    if override and override not in ("auto", "none"):
        return TorchChoice("custom", override, f"torch from the index given: {override}")
    if isinstance(driver, str):
        driver = nvidia_driver()
    choice = _preferred(system, machine.lower(), driver)
    if override == "none" and choice.index_url:
        return TorchChoice("pypi", None, choice.reason + "; --torch-index none: pip's configured "
                           "registries only" + _what_pypi_gives(system, machine))
    if choice.index_url and not is_reachable(choice.index_url + "torch/"):
        return TorchChoice("pypi", None, choice.reason + f"; {choice.index_url} does not answer "
                           "from here, so torch comes from pip's configured registries"
                           + _what_pypi_gives(system, machine))
    return choice


def _what_pypi_gives(system: str, machine: str) -> str:
    if system.startswith("linux") and machine.lower() in ("x86_64", "amd64"):
        return " (on Linux x86_64 that is the CUDA build, about 5 GB; it also runs on the CPU)"
    return ""


def _preferred(system: str, machine: str, driver: tuple[str, str] | None) -> TorchChoice:
    if system == "darwin":
        return TorchChoice("pypi", None, "macOS: PyPI's torch uses the CPU and Apple's GPU (MPS)")
    linux_x86 = system.startswith("linux") and machine in ("x86_64", "amd64")
    if driver is not None:
        build = _cuda_build(driver[0])
        seen = f"{driver[1]} with NVIDIA driver {driver[0]}"
        if build is None:
            return _cpu(system, machine, f"{seen} is older than CUDA 12 needs (525): CPU build; "
                        "update the driver to use the GPU")
        if linux_x86 and build == PYPI_CUDA_BUILD:
            return TorchChoice(build, None, f"{seen}: CUDA 13.0 build (PyPI's own)")
        return TorchChoice(build, PYTORCH_INDEX + build + "/",
                           f"{seen}: CUDA {build[2:4]}.{build[4:]} build from PyTorch's index")
    return _cpu(system, machine, "no NVIDIA driver found: CPU build")


def _cpu(system: str, machine: str, reason: str) -> TorchChoice:
    if system.startswith("linux") and machine in ("x86_64", "amd64"):
        return TorchChoice("cpu", PYTORCH_INDEX + "cpu/", reason + " from PyTorch's index "
                           "(about 1 GB installed instead of 5)")
    return TorchChoice("pypi", None, reason + " (PyPI's own for this platform)")
