"""The deployable network: Swin encoder + task head, returning class probabilities.

Probabilities (not logits) come out so that overlapping tiles can be blended by weight,
and the ONNX export carries the same contract.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_path
from ..errors import InputError
from ..package import CHANGE_TASK, ModelSpec
from .change import ChangeHead, ChangeNetwork
from .heads import ProbeHead, SceneHead, UPerNetHead, probabilities, upsample_logits
from .swin import EncoderConfig, SwinEncoder, build_encoder

WEIGHTS_FILE = "model.safetensors"
PROBE_HEAD = "probe"  # the quick fine-tune's linear head on frozen features


class GfmNetwork(nn.Module):
    """Encoder + head; `logits()` for training, `forward()` gives softmax probabilities."""

    def __init__(self, encoder: SwinEncoder, head: nn.Module, task: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.task = task

    def head_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The head's output: segmentation logits at stride 4, or one row per scene."""
        return self.head(self.encoder(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_logits(self.head_logits(x), x.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return probabilities(self.head_logits(x), x.shape[-2:])


def default_head_channels(embed_dim: int) -> int:
    """UPerNet width. The paper's mmseg setting uses 512, whose stride-4 fusion conv alone
    costs about as much as Swin-B; 256 keeps CPU classification practical (4x cheaper head)."""
    return 256 if embed_dim >= 96 else 64


def build_head(spec: ModelSpec, in_channels: list[int]) -> nn.Module:
    channels = int(spec.head.get("channels", 128))
    if spec.head.get("type") == PROBE_HEAD and spec.task != CHANGE_TASK:
        return ProbeHead(in_channels, spec.num_classes, pooled=spec.task != "segmentation")
    if spec.task == "segmentation":
        return UPerNetHead(in_channels, spec.num_classes, channels=channels)
    if spec.task == CHANGE_TASK:
        return ChangeHead(in_channels, spec.num_classes, channels=channels)
    return SceneHead(in_channels, spec.num_classes)


Network = GfmNetwork | ChangeNetwork


def build_network(spec: ModelSpec, encoder: SwinEncoder | None = None) -> Network:
    """A network shaped by `spec`; a given encoder (e.g. loaded from GFM weights) is reused."""
    if encoder is None:
        encoder = build_encoder(EncoderConfig.from_json(spec.encoder))
    head = build_head(spec, list(encoder.out_channels))
    if isinstance(head, ChangeHead):
        return ChangeNetwork(encoder, head, bands=len(spec.bands))
    return GfmNetwork(encoder, head, spec.task)


def save_network(net: Network, spec: ModelSpec, model_dir: Path) -> Path:
    path = Path(model_dir) / WEIGHTS_FILE
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {"gfm_encoder_config": json.dumps(spec.encoder), "gfm_model_json": json.dumps(spec.to_json())}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def load_network(model_dir: Path, spec: ModelSpec) -> Network:
    """Rebuild the network of a model package and load its weights (strict)."""
    path = Path(model_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise InputError(model_dir, f"model package has no {WEIGHTS_FILE}")
    net = build_network(spec)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(path, f"not a readable safetensors file (truncated or damaged? {exc}); "
                         "copy the model package again or fine-tune it again") from exc
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, OSError) as exc:
        raise InputError(path, f"weights do not match model.json: {exc}") from exc
    return net.eval()
