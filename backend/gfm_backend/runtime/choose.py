"""`--runtime auto`, the default: the fastest runtime that keeps the map on this machine.

Measured on 2-core CPUs (`gfm bench classify`, README "Speed"): every runtime but fp32
torch agrees with it on at least 99.7 % of the pixels. Where bf16 is native (AMX,
AVX512-BF16) eager bf16 runs 1.7-2.2x fp32 and the compiled network 2-3.3x (without AMX
int8 Linear layers make base's 1.2-1.3x faster again, not tiny's), but a compile costs
1-2 minutes once per model, which pays only on large rasters (base against bf16: from
about 70 megapixels); without native bf16, ONNX Runtime's int8 MatMuls run 1.3-2.1x on
base (AVX-512 or AVX2), and tiny at fp32's speed with less than half of torch's memory.
On CUDA the plain torch runtime already runs bf16.

The choice depends on the machine and the raster's size alone, not on what is cached, so
the same raster on the same machine is always classified the same way.
"""

from __future__ import annotations

from pathlib import Path

from ..package import ModelSpec

COMPILE_FROM_MPIX = 100.0  # rasters from here on are worth a compile (10,000 x 10,000 px)
WIDE_EMBED_DIM = 96  # encoders from this width gain from int8 Linear layers (`_wide_encoder`)


def choose_runtime(model_dir: Path, spec: ModelSpec, device: str,
                   pixels: int | None) -> tuple[str, str]:
    """The runtime `auto` stands for here, and why, in words for the report."""
    from .compiled import has_compiler
    from .device import cpu_has_amx, native_bf16, resolve_device, surely_cpu

    # torch is imported only where it decides, or runs: ONNX Runtime alone takes half the memory
    where = "cpu" if surely_cpu(device) else resolve_device(device).type
    if where == "cuda":
        return "torch", "on CUDA torch runs bf16"
    if not native_bf16(where):
        if _int8_fits(model_dir, spec):
            return "onnx-int8", "no native bf16 on this CPU; the package has model.int8.onnx"
        return "torch", "no native bf16 on this CPU and no model.int8.onnx at these tiles"
    if pixels is not None and pixels >= COMPILE_FROM_MPIX * 1e6 and has_compiler():
        pays = f"{pixels / 1e6:.0f} megapixels pay for compiling the network (once, then cached)"
        if cpu_has_amx():
            return "torch-compiled", f"native bf16 (AMX); {pays}"
        if _wide_encoder(spec):
            return "torch-compiled-int8", (f"native bf16 without AMX, where a wide encoder's "
                                           f"int8 Linear layers are faster; {pays}")
        return "torch-compiled", f"native bf16; {pays}"
    return "torch-bf16", "native bf16; too small a raster to pay for compiling the network"


def _wide_encoder(spec: ModelSpec) -> bool:
    """Linear layers wide enough to gain from int8 on a CPU without AMX: base's (128 to
    1024 channels) ran 1.29x faster, tiny's (32 to 256) 0.92x, the quantizing of each
    batch's activations costing more than their narrow matmuls save. Swin-T's 96 counts
    as wide (not measured)."""
    return int(spec.encoder.get("embed_dim", 0)) >= WIDE_EMBED_DIM


def _int8_fits(model_dir: Path, spec: ModelSpec) -> bool:
    """model.int8.onnx is there for these tiles: it is exported at the package's own
    inference tiles (`gfm export --tile-size` records them)."""
    from ..package import read_spec
    from .predictors import INT8_FILE

    return ((Path(model_dir) / INT8_FILE).is_file()
            and read_spec(model_dir).for_inference().tile_size == spec.tile_size)
