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
    """The network up to its head's logits (`CompiledPredictor` resizes them and takes
    the softmax eagerly), under bf16 autocast where asked: norms stay in fp32."""

    def __init__(self, net: Network, bf16: bool) -> None:
        super().__init__()
        self.net, self.bf16 = net, bf16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            return self.net.head_logits(x).float()


def compile_network(model_dir: Path, tile: int, batch: int, bf16: bool, out: Path) -> Path:
    """The package's network up to its head's logits at `tile` px and a static `batch` (a
    dynamic one ran 2.7x slower), weights frozen into the library, written to `out` (a
    `.pt2` file)."""
    import torch._inductor.config as inductor

    from ..package import read_spec

    spec = read_spec(model_dir).for_inference(tile)
    net = load_network(model_dir, spec)
    if net.encoder.config.img_size != spec.tile_size:
        net.encoder.set_input_size(spec.tile_size)
    module = _HeadLogits(net, bf16)
    example = torch.zeros(batch, spec.input_channels, tile, tile)
    inductor.freezing = True  # weights become constants, pre-packed for oneDNN
    with torch.inference_mode():
        program = torch.export.export(module.eval(), (example,))
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
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--parent", type=int, help="the job's process id")
    a = p.parse_args()
    if a.parent:
        die_with_parent(a.parent)
    compile_network(a.model, a.tile, a.batch, a.bf16, a.out)


if __name__ == "__main__":
    main()
