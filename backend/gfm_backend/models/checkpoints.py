"""Swin encoder weights from the files users actually have.

Accepted: the official GFM pretraining checkpoint (`gfm.pth`: student under `encoder.`,
ImageNet-22k teacher under `teacher.`, Microsoft layout, a pickled yacs config inside),
Microsoft and timm Swin checkpoints (`.pth`/`.safetensors`), and this project's own
files (`encoder.` + timm keys with the config in safetensors metadata, alone or in a
model package folder). Pickles are only ever read with `weights_only=True`: a file that
needs anything beyond tensors and plain containers is refused, never executed.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from timm.models import adapt_input_conv
from timm.models.swin_transformer import checkpoint_filter_fn as swin_checkpoint_filter
from torch.nn.modules.module import _IncompatibleKeys

from ..atomic import atomic_path
from ..errors import InputError
from .swin import EncoderConfig, SwinEncoder, build_encoder, resize_bias_table

CONFIG_METADATA_KEY = "gfm_encoder_config"
ENCODER_PREFIX = "encoder."
PACKAGE_WEIGHTS = "model.safetensors"
WRAPPER_KEYS = ("model", "state_dict", "module")
_PATCH_KEY = "patch_embed.proj.weight"
_BUFFERS = ("attn_mask", "relative_position_index")  # recomputed by the model, never loaded
_TABLE = "relative_position_bias_table"
_BLOCK_RE = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.")
_MASK_RE = re.compile(r"^layers\.(\d+)\.blocks\.\d+\.attn_mask$")


class _CfgNodeStandIn:
    """Takes the place of `yacs.config.CfgNode` while unpickling, without importing yacs.

    torch's safe unpickler only fills exact dict/OrderedDict types, so the stand-in's
    `__new__` hands back an OrderedDict: the config's items land in it, and yacs'
    bookkeeping attributes (`__immutable__`, ...) go into its `__dict__`, where they
    are ignored. No code from the file runs.
    """

    def __new__(cls, *args: object, **kwargs: object) -> Any:
        return OrderedDict()


_SAFE_GLOBALS = [(_CfgNodeStandIn, "yacs.config.CfgNode")]


# ---------------------------------------------------------------- reading files


def resolve_weights_path(path: str | os.PathLike[str]) -> Path:
    """A weights file, or the `model.safetensors` of a model package folder."""
    path = Path(path)
    if path.is_dir():
        inner = path / PACKAGE_WEIGHTS
        if not inner.is_file():
            raise InputError(path, f"folder has no {PACKAGE_WEIGHTS}; expected a model package")
        return inner
    if not path.exists():
        raise InputError(path, "checkpoint file not found")
    if not path.is_file():
        raise InputError(path, "is not a file")
    return path


def read_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """All tensors of a checkpoint (wrappers removed) and its metadata.

    Metadata: safetensors' string metadata as stored; for torch pickles the top-level
    scalars (`epoch`, `max_accuracy`, ...) and `config` as a plain dict.
    """
    path = resolve_weights_path(path)
    if path.suffix == ".safetensors" or _has_safetensors_header(path):
        return _read_safetensors(path)
    return _read_torch(path)


def _has_safetensors_header(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 30


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta: dict[str, Any] = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(path, f"is not a readable safetensors file ({exc})") from exc
    if not tensors:
        raise InputError(path, "contains no weights")
    meta.setdefault("format", "safetensors")
    return tensors, meta


def _read_torch(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        # mmap: only the encoder's tensors of a multi-GB training checkpoint get read
        with torch.serialization.safe_globals(cast(Any, _SAFE_GLOBALS)):
            obj = torch.load(
                path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
            )
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise InputError(
                path,
                f"contains a pickled Python object ({found.group(1)}) that cannot be loaded "
                "safely; save plain weights (torch.save(model.state_dict(), ...)) or "
                ".safetensors instead",
            ) from None
        problem = f"is not a readable PyTorch checkpoint ({_first_line(exc)})"
        raise InputError(path, problem) from None
    except Exception as exc:  # garbage makes the safe unpickler fail in many ways
        problem = f"is not a readable PyTorch checkpoint ({_first_line(exc)})"
        raise InputError(path, problem) from None
    return _unwrap(obj, path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Descend through `model` / `state_dict` / `module` wrappers to the tensors."""
    meta: dict[str, Any] = {"format": "torch"}
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        for key, value in obj.items():
            if isinstance(value, (str, int, float, bool)) or value is None:
                meta[str(key)] = value
            elif key == "config" and isinstance(value, Mapping):
                meta["config"] = _plain(value)
        obj = inner
    if not isinstance(obj, Mapping):
        raise InputError(path, f"holds a {type(obj).__name__}, not a state dict of weights")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise InputError(path, "contains no weights")
    if all(k.startswith("module.") for k in tensors):  # saved from DistributedDataParallel
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors, meta


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------- layouts


def swin_prefixes(sd: Mapping[str, Any]) -> list[str]:
    """Key prefixes under which a Swin encoder sits ('' for a bare one, 'encoder.', ...)."""
    return sorted(k[: -len(_PATCH_KEY)] for k in sd if k.endswith(_PATCH_KEY))


def _pick_prefix(sd: Mapping[str, Any], prefix: str | None, source: object) -> str:
    found = swin_prefixes(sd)
    if prefix is not None:
        if prefix and not prefix.endswith("."):
            prefix += "."
        if prefix + _PATCH_KEY not in sd:
            raise InputError(source, f"has no Swin encoder under '{prefix}' (found: {found})")
        return prefix
    if not found:
        raise InputError(
            source,
            f"has no Swin Transformer weights (no '{_PATCH_KEY}'); expected the GFM "
            "checkpoint, a Swin (Microsoft/timm) checkpoint or a GFM model package",
        )
    for preferred in ("", ENCODER_PREFIX):  # a bare Swin; GFM's student / our encoders
        if preferred in found:
            return preferred
    if len(found) == 1:
        return found[0]
    raise InputError(source, f"holds several Swin encoders {found}; pick one with prefix=")


def _select(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def is_microsoft_layout(sub: Mapping[str, Any]) -> bool:
    """Microsoft Swin merges at the END of stage i, so stage 0 owns a downsample; timm never."""
    return "layers.0.downsample.reduction.weight" in sub


def to_timm_layout(sub: Mapping[str, torch.Tensor], encoder: SwinEncoder) -> dict[str, torch.Tensor]:
    """The weights of one encoder (prefix removed) in the key layout of `encoder` (timm's).

    timm's own `checkpoint_filter_fn` does the renaming (Microsoft Swins merge patches at
    the end of a stage, timm at the start of the next) and drops the buffers the model
    recomputes. Relative position tables are resized first, bicubically as the official
    GFM code does (`resize_bias_table`), so that timm's different resize never runs; the
    mask token and classifier heads are not part of an encoder.
    """
    own = encoder.state_dict()
    sized = {}
    for key, value in sub.items():
        target = own.get(key)
        if key.endswith(_TABLE) and target is not None and _resizable(value, target):
            value = resize_bias_table(value, (math.isqrt(target.shape[0]) + 1) // 2)
        sized[key] = value
    with warnings.catch_warnings():  # timm warns when it resamples a patch embedding
        warnings.simplefilter("ignore")
        renamed = swin_checkpoint_filter(sized, encoder)
    return {k: v for k, v in renamed.items()
            if k != "mask_token" and not k.startswith("head.") and k.rsplit(".", 1)[-1] not in _BUFFERS}


def _resizable(value: torch.Tensor, target: torch.Tensor) -> bool:
    return (value.ndim == 2 and value.shape != target.shape and value.shape[1] == target.shape[1]
            and math.isqrt(value.shape[0]) ** 2 == value.shape[0])


def _shape_only_encoder(config: EncoderConfig) -> SwinEncoder:
    """An encoder with no storage behind its tensors: all timm's filter needs to read."""
    with torch.device("meta"):
        return build_encoder(config, init_weights=False)


def encoder_state_dict(
    sd: Mapping[str, torch.Tensor], prefix: str | None = None, *, source: object = "state dict"
) -> dict[str, torch.Tensor]:
    """The encoder's weights in timm layout (keys as `SwinEncoder.state_dict()`).

    `prefix` picks the encoder ('encoder.' = GFM student, 'teacher.'); by default a
    bare Swin, else 'encoder.', else the only one. Buffers the model recomputes
    (`attn_mask`, `relative_position_index`), classifier heads and the mask token
    are dropped; Microsoft-layout patch merging moves to the start of the next stage.
    """
    sub = _select(sd, _pick_prefix(sd, prefix, source))
    return to_timm_layout(sub, _shape_only_encoder(infer_config(sub, source=source)))


def infer_config(
    sub: Mapping[str, torch.Tensor], *, source: object = "state dict"
) -> EncoderConfig:
    """Read the architecture off the weights of one encoder (prefix already removed).

    Window: from the relative position tables, (2w-1)^2 rows. Image size: from a stored
    attention mask (Microsoft layout) when there is one, else the size whose last stage
    is exactly one window (224 for window 7, 192 for 6, 384 for 12: how Swins are trained).
    """
    patch = sub.get(_PATCH_KEY)
    if patch is None or patch.ndim != 4 or patch.shape[-1] != patch.shape[-2]:
        raise InputError(source, f"'{_PATCH_KEY}' is not a square patch-embedding convolution")
    embed_dim, in_chans, patch_size = (int(s) for s in patch.shape[:3])
    blocks: dict[int, set[int]] = {}
    for key in sub:
        if m := _BLOCK_RE.match(key):
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise InputError(source, "Swin stages are missing or numbered with gaps")
    depths, heads, windows = [], [], []
    for stage in range(len(blocks)):
        if blocks[stage] != set(range(len(blocks[stage]))):
            raise InputError(source, f"stage {stage} has blocks missing")
        depths.append(len(blocks[stage]))
        table = sub.get(f"layers.{stage}.blocks.0.attn.relative_position_bias_table")
        side = math.isqrt(table.shape[0]) if table is not None and table.ndim == 2 else 0
        if table is None or side * side != (table.shape[0] if side else -1) or side % 2 == 0:
            raise InputError(source, f"stage {stage} has no usable relative position bias table")
        heads.append(int(table.shape[1]))
        windows.append((side + 1) // 2)
    window = max(windows)  # later stages may have been clipped to a smaller feature map
    img_size = _img_size_from_masks(sub, patch_size) or window * patch_size * 2 ** (len(depths) - 1)
    try:
        return EncoderConfig(embed_dim, tuple(depths), tuple(heads), patch_size, window,
                             in_chans, img_size)
    except ValueError as exc:
        raise InputError(source, f"is not a Swin of a usable shape: {exc}") from None


def _img_size_from_masks(sub: Mapping[str, torch.Tensor], patch_size: int) -> int | None:
    for key, mask in sub.items():
        if (m := _MASK_RE.match(key)) and mask.ndim == 3:
            per_side, window = math.isqrt(mask.shape[0]), math.isqrt(mask.shape[1])
            if per_side**2 == mask.shape[0] and window**2 == mask.shape[1]:
                return per_side * window * patch_size * 2 ** int(m.group(1))
    return None


# ---------------------------------------------------------------- loading


def load_state_dict_into(
    encoder: SwinEncoder,
    sd: Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    source: object = "state dict",
) -> _IncompatibleKeys:
    """Load timm-layout weights, resizing position tables to the encoder's windows.

    Any other mismatch raises InputError naming `source` (strict: also missing or
    unexpected keys).
    """
    own = encoder.state_dict()
    weights = dict(sd)
    for key, value in sd.items():
        target = own.get(key)
        if key.endswith(_TABLE) and target is not None and _resizable(value, target):
            weights[key] = resize_bias_table(value, (math.isqrt(target.shape[0]) + 1) // 2)
    try:
        result = encoder.load_state_dict(weights, strict=False)
    except RuntimeError as exc:
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:4])
        problem = f"weights do not fit a Swin encoder of this shape: {detail}"
        raise InputError(source, problem) from None
    if strict and (result.missing_keys or result.unexpected_keys):
        problem = f"is not a Swin encoder checkpoint this build can use: {_describe(result)}"
        raise InputError(source, problem)
    return result


def _describe(result: _IncompatibleKeys) -> str:
    parts = []
    for label, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys)):
        if keys:
            parts.append(f"{len(keys)} {label} weights (e.g. {', '.join(keys[:3])})")
    return "; ".join(parts)


def load_encoder(
    path: str | os.PathLike[str],
    *,
    img_size: int | None = None,
    window_size: int | None = None,
    in_chans: int | None = None,
    prefix: str | None = None,
    strict: bool = True,
    drop_path_rate: float = 0.0,
) -> SwinEncoder:
    """A SwinEncoder with the weights of `path` (file or model package folder).

    The architecture comes from the file's recorded config, else from the weights; a
    checkpoint keeps its own tile size and window unless `img_size` / `window_size`
    say otherwise (position tables are then interpolated). For `gfm.pth` the student
    is loaded; `prefix="teacher."` gives the ImageNet-22k teacher. `in_chans` adapts
    the patch embedding to another band count (timm's repeat-and-rescale).
    """
    sd, meta = read_state_dict(path)
    source = resolve_weights_path(path)
    recorded = meta.get(CONFIG_METADATA_KEY)  # describes the 'encoder.' weights
    if recorded is not None and prefix is None and ENCODER_PREFIX in swin_prefixes(sd):
        prefix = ENCODER_PREFIX
    chosen = _pick_prefix(sd, prefix, source)
    sub = _select(sd, chosen)
    if recorded is not None and chosen == ENCODER_PREFIX:
        try:
            config = EncoderConfig.from_json(recorded)
        except (ValueError, TypeError) as exc:
            raise InputError(source, f"has an unreadable '{CONFIG_METADATA_KEY}': {exc}") from None
    else:
        config = infer_config(sub, source=source)
    weights = dict(sub)
    try:
        config = config.with_input(img_size, window_size)
        if in_chans is not None and in_chans != config.in_chans:
            weights[_PATCH_KEY] = adapt_input_conv(in_chans, weights[_PATCH_KEY], config.in_chans)
            config = replace(config, in_chans=in_chans)
    except ValueError as exc:
        raise InputError(source, f"cannot build the encoder: {exc}") from None
    encoder = build_encoder(config, drop_path_rate=drop_path_rate, init_weights=False)
    load_state_dict_into(encoder, to_timm_layout(weights, encoder), strict=strict, source=source)
    return encoder


def save_encoder(
    encoder: SwinEncoder,
    path: str | os.PathLike[str],
    extra_metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write `encoder.` + timm keys and the config as metadata; atomic (temp file + rename)."""
    state = {ENCODER_PREFIX + k: v for k, v in encoder.state_dict().items()}
    meta = {CONFIG_METADATA_KEY: json.dumps(encoder.config.to_json())}
    return save_safetensors_atomic(state, path, {**(extra_metadata or {}), **meta})


def save_safetensors_atomic(state: Mapping[str, torch.Tensor], path: str | os.PathLike[str],
                            metadata: Mapping[str, Any] | None = None) -> Path:
    """Tensors to safetensors (non-string metadata as JSON) via a temp file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path
