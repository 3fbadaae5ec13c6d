"""ONNX export of a model package, with model.json carried as ONNX metadata props."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import onnx
import torch

from ..atomic import atomic_path
from ..errors import InputError
from ..models.change import ChangeNetwork, PairInputs
from ..models.network import Network, load_network
from ..outputs import MODEL, add_to_manifest
from ..package import ModelSpec, read_spec, write_spec
from .export_paths import export_target, int8_path
from .params import ExportParams

log = logging.getLogger(__name__)
OPSET = 18


def export_onnx(net: Network, spec: ModelSpec, path: Path, tile: int | None = None) -> Path:
    """Trace the network at the inference tile (`tile`, else the package's) with a dynamic
    batch axis; a change network gets two inputs, `before` and `after`."""
    net = net.eval().cpu()
    size = spec.for_inference(tile).tile_size  # a scene model's is always its own
    trained = net.encoder.config.img_size
    if size != trained:
        net.encoder.set_input_size(size)
    try:
        return _export(net, spec, path, size)
    finally:
        if net.encoder.config.img_size != trained:
            net.encoder.set_input_size(trained)


def quantize_int8(onnx_path: Path, out: Path | None = None) -> Path:
    """The int8 model beside an ONNX file: ONNX Runtime's dynamic quantization of the
    MatMuls (the attention and MLP layers, most of the Swin's work), int8 weights and
    activations quantized per batch, so no calibration data is needed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out) if out else int8_path(onnx_path)
    with atomic_path(out, suffix=".onnx") as tmp:
        quantize_dynamic(str(onnx_path), str(tmp), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"])
    return out


def _export(net: Network, spec: ModelSpec, path: Path, size: int) -> Path:
    dummy = torch.zeros(1, len(spec.bands), size, size)
    batch = {0: torch.export.Dim("batch", min=1, max=4096)}
    module: torch.nn.Module = net
    names: list[str] = ["image"]
    inputs: tuple[torch.Tensor, ...] = (dummy,)
    if isinstance(net, ChangeNetwork):
        module, names, inputs = PairInputs(net).eval(), ["before", "after"], (dummy, dummy.clone())
    path = Path(path)
    with atomic_path(path, suffix=".onnx") as tmp, torch.no_grad():
        torch.onnx.export(
            module, inputs, str(tmp), input_names=names, output_names=["probabilities"],
            dynamic_shapes=tuple(batch for _ in inputs), opset_version=OPSET, dynamo=True,
            verbose=False,
        )
        model = onnx.load(str(tmp))
        for key, value in spec.onnx_metadata().items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(tmp))  # weights inlined: one self-contained file (no .data kept)
    return path


def run_export(params: ExportParams) -> Path:
    return export(params.model_dir, params.out, params.overwrite, params.tile_size, params.int8)


def export(model_dir: Path, out: Path | None = None, overwrite: bool = False,
           tile: int | None = None, int8: bool = False) -> Path:
    """`gfm export`: write model.onnx for a package (in the package, or at `out`), at the
    package's inference tile or `tile`; `int8` also writes the int8 model beside it."""
    model_dir = Path(model_dir)
    spec = read_spec(model_dir)
    try:
        inference = spec.for_inference(tile)
    except ValueError as exc:
        raise InputError(model_dir, str(exc)) from exc
    target = export_target(model_dir, out, overwrite)
    if int8 and target != model_dir / "model.onnx":
        export_target(model_dir, int8_path(target), overwrite)  # refused before any work
    net = load_network(model_dir, spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(net, spec, target, tile)
    written = [target] + ([quantize_int8(target)] if int8 else [])
    for path in written:
        if path.parent == model_dir:
            add_to_manifest(model_dir, MODEL, path.name)
    if tile and target == model_dir / "model.onnx" and spec.task != "scene_classification":
        # the package's own ONNX file runs these tiles now: so does the package
        write_spec(model_dir, replace(spec, infer_tile_size=inference.tile_size,
                                      infer_tile_overlap=inference.tile_overlap))
    return target
