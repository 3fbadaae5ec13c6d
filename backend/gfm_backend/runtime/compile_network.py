"""The child process `compiled.py` starts: export a package's network and compile it with
AOTInductor into a `.pt2` file. Run apart from the job so that a cancel can stop it and
the compiler's memory and failures stay out of the job's process."""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

from ..models.network import Network, load_network

PR_SET_PDEATHSIG = 1  # linux/prctl.h: a signal the kernel sends when the parent dies


class _HeadLogits(nn.Module):
    """The network up to its head's logits: `CompiledPredictor` resizes them and takes
    the softmax with torch's own kernels, which ran 5x faster than the compiled ones."""

    def __init__(self, net: Network) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.head_logits(x)


class _Autocast(nn.Module):
    """bf16 autocast inside the graph: norms and softmax stay in fp32."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.module(x).float()


def int8_linears(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """`module` with its Linear layers (the encoder's matmuls, 60 % of base's work) in
    int8: activations quantized per batch as they come (dynamic, so nothing to
    calibrate), weights per output channel; Inductor fuses them into oneDNN's int8
    kernels (VNNI, AMX). Convolutions and everything else keep their precision."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    quantizer = x86.X86InductorQuantizer()
    quantizer.set_module_type_qconfig(
        nn.Linear, x86.get_default_x86_inductor_quantization_config(is_dynamic=True))
    prepared = prepare_pt2e(torch.export.export(module, (example,)).module(), quantizer)
    with torch.no_grad():
        prepared(example)  # dynamic observers record nothing; convert needs one pass
    return convert_pt2e(prepared)


def compile_network(model_dir: Path, tile: int, batch: int, bf16: bool, out: Path,
                    int8: bool = False, threads: int | None = None) -> Path:
    """The package's network up to its head's logits at `tile` px and a static `batch` (a
    dynamic one ran 2.7x slower), weights frozen into the library, written to `out` (a
    `.pt2` file); `int8`: its Linear layers in int8 (`int8_linears`); `threads`: the
    compute threads its kernels run on (written into them; default: this process's)."""
    import torch._inductor.config as inductor

    from ..package import read_spec

    spec = read_spec(model_dir).for_inference(tile)
    net = load_network(model_dir, spec)
    if net.encoder.config.img_size != spec.tile_size:
        net.encoder.set_input_size(spec.tile_size)
    example = torch.zeros(batch, spec.input_channels, tile, tile)
    module: nn.Module = _HeadLogits(net).eval()
    if int8:
        module = int8_linears(module, example)
    if bf16:
        module = _Autocast(module)
    inductor.freezing = True  # weights become constants, pre-packed for oneDNN
    if threads:
        inductor.cpp.threads = threads
    with torch.no_grad():
        program = torch.export.export(module, (example,))
        return Path(torch._inductor.aoti_compile_and_package(program, package_path=str(out)))


def die_with_parent(parent: int) -> None:
    """A job killed outright (the service's cancel grace, a SIGKILL) takes its compile
    with it, rather than leaving it to finish into a file nobody renames (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def main() -> None:
    """Arguments from `compiled.py`; the job's process id makes the compile die with it."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model", type=Path)
    p.add_argument("--tile", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--int8", action="store_true", help="the Linear layers in int8")
    p.add_argument("--threads", type=int, help="the job's compute threads")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--parent", type=int, help="the job's process id")
    a = p.parse_args()
    if a.parent:
        die_with_parent(a.parent)
    if a.threads:
        torch.set_num_threads(a.threads)
    compile_network(a.model, a.tile, a.batch, a.bf16, a.out, int8=a.int8, threads=a.threads)


if __name__ == "__main__":
    main()
