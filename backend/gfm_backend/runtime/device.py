"""Device choice: `auto` takes CUDA when torch sees a GPU, else the CPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import GfmError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
# The GPU a rank of a run over several GPUs computes on, where its launcher says so (the
# service's split classify: its slots' devices, which need not be cuda:LOCAL_RANK).
RANK_DEVICE_ENV = "GFM_RANK_DEVICE"


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


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run in hardware here: CUDA, or a CPU with AMX or AVX512-BF16
    (elsewhere torch emulates them, slower than fp32)."""
    if device.type == "cuda":
        return True
    import torch

    return cpu_has_amx() or bool(torch.cpu._is_avx512_bf16_supported())


def cpu_has_amx() -> bool:
    """Intel's AMX tiles (Xeon 4th generation and later): bf16 matmuls at int8's speed,
    so the compiled network's int8 Linear layers are not worth their rounding there."""
    import torch

    return bool(torch.cpu._is_amx_tile_supported())
