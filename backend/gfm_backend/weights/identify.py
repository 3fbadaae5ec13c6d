"""What a checkpoint file is, read off its keys and shapes before anyone trusts it.

A weights file must be recognised by the loaders (`load_encoder`, `load_pretrainer`'s
teacher) and be the architecture it claims: a Swin-T, a ViT or a ResNet arriving under a
Swin-B's name is refused with a message naming what it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..models.checkpoints import (
    CONFIG_METADATA_KEY,
    ENCODER_PREFIX,
    infer_config,
    is_microsoft_layout,
    read_state_dict,
    resolve_weights_path,
    swin_prefixes,
)
from ..models.swin import EncoderConfig

IMAGENET_22K_CLASSES = 21841
_SWIN_NAMES: dict[tuple[int, tuple[int, ...]], str] = {
    (96, (2, 2, 6, 2)): "Swin-T", (96, (2, 2, 18, 2)): "Swin-S", (128, (2, 2, 18, 2)): "Swin-B",
    (192, (2, 2, 18, 2)): "Swin-L", (32, (2, 2, 2, 2)): "Swin (this backend's tiny config)"}
# key fragments that give other architectures away
_OTHERS = ((re.compile(r"(^|\.)(logit_scale|cpb_mlp\.)"), "a Swin Transformer V2"),
           (re.compile(r"(^|\.)cls_token$|^blocks\.0\."), "a ViT"),
           (re.compile(r"^layer1\.0\.conv1\.weight$"), "a ResNet"),
           (re.compile(r"(^|\.)downsample_layers\.|^stages\.0\.blocks\.0\.conv_dw"), "a ConvNeXt"))
NOT_SWIN = "a checkpoint of unknown architecture"


@dataclass(frozen=True)
class Identity:
    """`role`: student (a GFM pretrained encoder), teacher (an ImageNet-22k Swin), run (a
    continual-pretraining run of this backend) or encoder (a model package's or other)."""

    what: str
    role: str
    architecture: str
    config: EncoderConfig
    prefix: str

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"what": self.what, "role": self.role, "architecture": self.architecture,
                "shape": f"embed {c.embed_dim}, depths {'-'.join(map(str, c.depths))}, "
                         f"window {c.window_size}, {c.img_size} px, {c.in_chans} bands",
                "prefix": self.prefix}


def architecture_name(config: EncoderConfig) -> str:
    return _SWIN_NAMES.get((config.embed_dim, tuple(config.depths)),
                           f"Swin (embed {config.embed_dim}, depths {list(config.depths)})")


def other_architecture(sd: Mapping[str, Any]) -> str:
    """A best guess at what a non-Swin checkpoint is, for the refusal message."""
    for pattern, name in _OTHERS:
        if any(pattern.search(key) for key in sd):
            return name
    return NOT_SWIN


def identify(path: str | os.PathLike[str]) -> Identity:
    """Read the file and say what it is; InputError naming the file when it is no Swin."""
    source = resolve_weights_path(path)
    sd, meta = read_state_dict(source)
    prefixes = swin_prefixes(sd)
    other = other_architecture(sd)
    if not prefixes or other != NOT_SWIN:
        raise InputError(source, f"is {other}{'' if other == NOT_SWIN else ' checkpoint'}, not a "
                         "Swin Transformer (V1) encoder; GFM uses Swin-B (gfm.pth, or the "
                         "ImageNet-22k Swin-B teacher)")
    prefix = ENCODER_PREFIX if ENCODER_PREFIX in prefixes else ("" if "" in prefixes else prefixes[0])
    sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    config = infer_config(sub, source=source)
    what, role = _kind(sd, meta, prefixes, sub)
    return Identity(what, role, architecture_name(config), config, prefix)


def _kind(sd: Mapping[str, Any], meta: Mapping[str, Any], prefixes: list[str],
          sub: Mapping[str, Any]) -> tuple[str, str]:
    if ENCODER_PREFIX in prefixes and "teacher." in prefixes:
        if is_microsoft_layout(sub):
            return "GFM pretraining checkpoint (student and ImageNet-22k teacher)", "student"
        return "continual-pretraining checkpoint of this backend (student and teacher)", "run"
    if ENCODER_PREFIX in prefixes:
        if CONFIG_METADATA_KEY in meta:
            return "encoder saved by this backend (a model package or exported run)", "encoder"
        return "Swin encoder under 'encoder.'", "encoder"
    head = sd.get("head.weight") if "" in prefixes else None
    if head is None:
        head = sd.get("head.fc.weight") if "" in prefixes else None
    if head is not None and int(head.shape[0]) == IMAGENET_22K_CLASSES:
        return "ImageNet-22k Swin classifier (the GFM teacher)", "teacher"
    if head is not None:
        return f"Swin classifier ({int(head.shape[0])} classes)", "encoder"
    return "Swin encoder", "encoder"


def check_expected(identity: Identity, architecture: str, name: str, source: object) -> None:
    """Refuse a file that is not the architecture its catalog entry names."""
    if identity.architecture != architecture:
        raise InputError(source, f"is a {identity.architecture} checkpoint "
                         f"({identity.describe()['shape']}), not the {architecture} that "
                         f"{name!r} names; check the file or the download address")
