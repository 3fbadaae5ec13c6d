"""Device choice: `auto` takes CUDA when torch sees a GPU, else the CPU."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import GfmError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
# The GPU a rank of a run over several GPUs computes on, where its launcher says so (the
# service's split classify: its slots' devices, which need not be cuda:LOCAL_RANK).
RANK_DEVICE_ENV = "GFM_RANK_DEVICE"
# Linux device nodes of a GPU torch could compute on: NVIDIA's, WSL2's, ROCm's
GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd")
CPUINFO = "/proc/cpuinfo"
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")  # Linux's names for native bf16


def resolve_device(name: str = "auto") -> torch.device:
    import torch  # here, so that the ONNX path never loads torch

    if name not in DEVICES and not name.startswith("cuda:"):
        raise GfmError(f"unknown device {name!r}; use one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GfmError("--device cuda was asked for, but torch sees no CUDA GPU on this machine")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        import torch

        return f"CUDA: {torch.cuda.get_device_name(device)}"
    return "CPU"


def surely_cpu(name: str) -> bool:
    """Whether device `name` computes on the CPU, decided without importing torch (half a
    gigabyte): `cpu`, or `auto` where no GPU is attached (Linux's device nodes; macOS has
    no CUDA). False where only torch can tell."""
    if name == "cpu":
        return True
    if name != "auto":
        return False
    if sys.platform == "darwin":
        return True
    return sys.platform.startswith("linux") and not any(Path(n).exists() for n in GPU_NODES)


def native_bf16(device: torch.device | str) -> bool:
    """Whether bf16 matmuls run in hardware here: CUDA, or a CPU with AMX or AVX512-BF16
    (elsewhere torch emulates them, slower than fp32). A CPU whose flags Linux lists
    without them is answered without importing torch."""
    if (device if isinstance(device, str) else device.type) == "cuda":
        return True
    flags = _cpu_flags()
    if flags is not None and not flags.intersection(BF16_FLAGS):
        return False
    import torch

    return cpu_has_amx() or bool(torch.cpu._is_avx512_bf16_supported())


def cpu_has_amx() -> bool:
    """Intel's AMX tiles (Xeon 4th generation and later): bf16 matmuls at int8's speed,
    so the compiled network's int8 Linear layers are not worth their rounding there."""
    import torch

    return bool(torch.cpu._is_amx_tile_supported())


def _cpu_flags() -> frozenset[str] | None:
    """The first core's instruction sets as Linux lists them; None where unknown."""
    try:
        text = Path(CPUINFO).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[-1].split())
    return None
