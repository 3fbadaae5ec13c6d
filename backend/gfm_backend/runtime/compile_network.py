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


class _Autocast(nn.Module):
    """bf16 autocast inside the graph: the compiled network keeps norms and softmax in fp32."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.net(x)


def compile_network(model_dir: Path, tile: int, batch: int, bf16: bool, out: Path) -> Path:
    import torch._inductor.config as inductor

    from ..models.network import load_network
    from ..package import read_spec

    spec = read_spec(model_dir).for_inference(tile)
    net = load_network(model_dir, spec)
    if net.encoder.config.img_size != spec.tile_size:
        net.encoder.set_input_size(spec.tile_size)
    module = _Autocast(net) if bf16 else net
    example = torch.zeros(batch, len(spec.bands) * spec.inputs, tile, tile)
    inductor.freezing = True  # weights become constants, pre-packed for oneDNN
    with torch.inference_mode():
        program = torch.export.export(module.eval(), (example,))
        return Path(torch._inductor.aoti_compile_and_package(program, package_path=str(out)))


def die_with_parent(parent: int) -> None:
    """A job killed outright (the service's cancel grace, a SIGKILL) takes its compile
    with it, rather than leaving it to finish into a file nobody renames (Linux)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def main() -> None:
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
