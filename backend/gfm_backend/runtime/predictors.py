"""Predictors: normalised float32 NCHW batch in, class probabilities out, as numpy.

One interface for torch (fp32 on a CPU, bf16 autocast on CUDA; `torch-bf16`: bf16 on a
CPU too, 2.5-3x faster where it has AMX; `torch-compiled`: that network compiled ahead of
time for the CPU, `compiled.py`; `torch-compiled-int8`: its Linear layers in int8) and
ONNX Runtime, so the
tiling, blending and writing code never knows which runtime runs the network. torch is
imported only for the torch runtime: it costs ~0.5 GB of resident memory on its own.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..errors import Cancelled, GfmError, InputError
from ..package import ModelSpec
from ..progress import Progress
from .device import describe_device, native_bf16, resolve_device
from .threads import onnx_session_options

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
AUTO = "auto"  # the fastest runtime that keeps the map here (`choose.py`)
COMPILED_RUNTIMES = ("torch-compiled", "torch-compiled-int8")
TORCH_RUNTIMES = ("torch", "torch-bf16", *COMPILED_RUNTIMES)
RUNTIMES = (*TORCH_RUNTIMES, "onnx", "onnx-int8")
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"  # MatMuls quantized to int8 (`gfm export --int8`)
ONNX_FILES = {"onnx": ONNX_FILE, "onnx-int8": INT8_FILE}


class Predictor(Protocol):
    description: str
    # compiled for one batch size (short batches padded): the streaming loop then fills
    # batches across tile rows (`tiling.TileRun.carries_tiles`)
    fixed_batch: bool

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TorchPredictor:
    fixed_batch = False

    def __init__(self, net: torch.nn.Module, device: torch.device, bf16: bool | None = None) -> None:
        import torch

        self.torch = torch
        self.net = net.to(device).eval()
        self.device = device
        self.bf16 = device.type == "cuda" if bf16 is None else bf16
        slow = "" if native_bf16(device) else ", emulated: slower than fp32 on this CPU"
        self.description = f"torch on {describe_device(device)}" + (
            f" (bf16{slow})" if self.bf16 else "")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                probs = self.net(x)
            return probs.float().cpu().numpy()


class OnnxPredictor:
    fixed_batch = False

    def __init__(self, onnx_path: Path, device: str = "auto") -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        want_cuda = device != "cpu" and "CUDAExecutionProvider" in available
        if device.startswith("cuda") and not want_cuda:
            raise GfmError("--device cuda with --runtime onnx needs onnxruntime-gpu (CUDA provider)")
        providers = (["CUDAExecutionProvider"] if want_cuda else []) + ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(onnx_path), onnx_session_options(),
                                                providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InputError(onnx_path, f"ONNX Runtime cannot load the model: {exc}") from exc
        # one input (an image), or two (a change pair: BEFORE's channels, then AFTER's)
        self.input_names = [i.name for i in self.session.get_inputs()]
        used = self.session.get_providers()[0].replace("ExecutionProvider", "")
        self.description = f"onnxruntime on {used}"
        size = self.session.get_inputs()[0].shape[-1]
        self.tile = size if isinstance(size, int) else None  # exported at one tile size

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        parts = np.split(batch, len(self.input_names), axis=1)
        feed = {name: np.ascontiguousarray(part, dtype=np.float32)
                for name, part in zip(self.input_names, parts, strict=True)}
        return self.session.run(None, feed)[0]


def make_predictor(model_dir: Path, spec: ModelSpec, runtime: str = "torch",
                   device: str = "auto", batch_size: int = 8,
                   progress: Progress | None = None, pixels: int | None = None) -> Predictor:
    """Open the model package on the asked runtime and device (`batch_size` and `progress`:
    for torch-compiled, which compiles for that batch on its first use). `auto` picks one
    for this machine and the raster's `pixels` (`choose.py`) and says which and why."""
    if runtime == AUTO:
        return _auto_predictor(model_dir, spec, device, batch_size, progress, pixels)
    if runtime in TORCH_RUNTIMES:
        torch_device = resolve_device(device)
        if runtime in COMPILED_RUNTIMES and torch_device.type == "cpu":
            return _compiled_predictor(model_dir, spec, batch_size, progress,
                                       int8=runtime == "torch-compiled-int8")
        from ..models.network import load_network

        net = load_network(model_dir, spec)
        if net.encoder.config.img_size != spec.tile_size:  # the inference tile, same window
            net.encoder.set_input_size(spec.tile_size)
        eager = TorchPredictor(net, torch_device, bf16=True if runtime == "torch-bf16" else None)
        if runtime in COMPILED_RUNTIMES:  # compiling is for the CPU: CUDA runs eager bf16
            eager.description += ", not compiled: compiling is for the CPU only"
        return eager
    if runtime in ONNX_FILES:
        path = Path(model_dir) / ONNX_FILES[runtime]
        if not path.is_file():
            how = "gfm export --int8" if runtime == "onnx-int8" else "gfm export"
            raise InputError(model_dir, f"no {path.name} in the model package; run `{how}`")
        predictor = OnnxPredictor(path, device)
        if predictor.tile is not None and predictor.tile != spec.tile_size:
            raise InputError(path, f"was exported for {predictor.tile} px tiles, not "
                             f"{spec.tile_size}: use that tile size, the torch runtime, or "
                             f"`gfm export --tile-size {spec.tile_size}`")
        return predictor
    raise GfmError(f"unknown runtime {runtime!r}; use one of {', '.join((AUTO, *RUNTIMES))}")


def _auto_predictor(model_dir: Path, spec: ModelSpec, device: str, batch_size: int,
                    progress: Progress | None, pixels: int | None) -> Predictor:
    """The runtime `choose.py` picks; a compile that fails leaves the job on torch-bf16
    (the user asked for speed, not for that runtime)."""
    from .choose import choose_runtime

    chosen, why = choose_runtime(model_dir, spec, device, pixels)
    try:
        predictor = make_predictor(model_dir, spec, chosen, device, batch_size, progress)
    except (Cancelled, InputError):
        raise
    except GfmError as exc:
        if chosen not in COMPILED_RUNTIMES:
            raise
        log.warning("%s; running torch-bf16 instead", exc)
        chosen, why = "torch-bf16", f"compiling failed ({exc})"
        predictor = make_predictor(model_dir, spec, chosen, device, batch_size, progress)
    predictor.description += f"; --runtime auto chose {chosen}: {why}"
    return predictor


def _compiled_predictor(model_dir: Path, spec: ModelSpec, batch_size: int,
                        progress: Progress | None, int8: bool = False) -> Predictor:
    """torch-compiled on the CPU: bf16 where it is native, fp32 elsewhere (emulated bf16
    would be slower than fp32); `int8`: the Linear layers in int8 as well."""
    import torch

    from ..models.network import WEIGHTS_FILE
    from .compiled import CompiledPredictor, compiled_network

    if not (Path(model_dir) / WEIGHTS_FILE).is_file():  # its weights are what is compiled
        raise InputError(model_dir, f"model package has no {WEIGHTS_FILE}")
    bf16 = native_bf16(torch.device("cpu"))
    path, seconds = compiled_network(Path(model_dir), spec, batch_size, bf16, progress, int8)
    when = f"compiled in {seconds:.0f} s" if seconds else "compiled earlier, from the cache"
    shape = (spec.input_channels, spec.tile_size, spec.tile_size)
    precision = ("int8 Linear layers, " if int8 else "") + ("bf16" if bf16 else "fp32")
    return CompiledPredictor(path, batch_size, shape,
                             f"torch on CPU ({precision}, AOTInductor, {when})")
