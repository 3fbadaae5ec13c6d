"""ONNX export of a model package, with model.json carried as ONNX metadata props."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
import torch

from ..atomic import atomic_path
from ..errors import InputError
from ..models.change import ChangeNetwork, PairInputs
from ..models.network import Network, load_network
from ..outputs import MODEL, add_to_manifest
from ..package import ModelSpec, read_spec
from .params import ExportParams

log = logging.getLogger(__name__)
OPSET = 18


def export_onnx(net: Network, spec: ModelSpec, path: Path) -> Path:
    """Trace the network at the model's tile size with a dynamic batch axis; a change
    network gets two inputs, `before` and `after`."""
    net = net.eval().cpu()
    dummy = torch.zeros(1, len(spec.bands), spec.tile_size, spec.tile_size)
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


def export_target(model_dir: Path, out: Path | None, overwrite: bool) -> Path:
    """The package's own model.onnx is the package's to replace; any other existing file
    is someone's, replaced only with `overwrite`."""
    if out is None or Path(out).absolute() == (model_dir / "model.onnx").absolute():
        return model_dir / "model.onnx"
    target = Path(out)
    if target.is_dir():
        raise InputError(target, "is a folder; give the ONNX file's name")
    if target.absolute().parent.resolve() == model_dir.resolve():
        raise InputError(target, "lies in the model package being exported; write model.onnx "
                         "there (the default) or a file outside it")
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise InputError(target, "already exists; pass --overwrite (service: \"overwrite\": true) "
                         "to replace it, or choose another file name")
    return target


def run_export(params: ExportParams) -> Path:
    return export(params.model_dir, params.out, params.overwrite)


def export(model_dir: Path, out: Path | None = None, overwrite: bool = False) -> Path:
    """`gfm export`: write model.onnx for a package (in the package, or at `out`)."""
    model_dir = Path(model_dir)
    spec = read_spec(model_dir)
    target = export_target(model_dir, out, overwrite)
    net = load_network(model_dir, spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(net, spec, target)
    if target == model_dir / "model.onnx":
        add_to_manifest(model_dir, MODEL, target.name)
    return target
