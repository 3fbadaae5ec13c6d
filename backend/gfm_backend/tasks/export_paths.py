"""Where an export writes, decided without the ML stack: the service checks it while the
client waits for POST /jobs, and importing torch there outlasted the client's patience."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError


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


def int8_path(onnx_path: Path) -> Path:
    name = Path(onnx_path).name
    return Path(onnx_path).with_name(name[: -len(".onnx")] + ".int8.onnx"
                                     if name.endswith(".onnx") else name + ".int8.onnx")
