"""The Swin Transformer encoder GFM pretrains and every task fine-tunes.

`SwinEncoder` *is* a timm `SwinTransformer` (a subclass, not a wrapper), so its own
state-dict keys are exactly timm's layout: a network that holds it as `.encoder` saves
`encoder.` + timm keys, which is what `checkpoints.load_encoder` reads back. Calling it
returns the four stage outputs (NCHW, strides 4/8/16/32, no extra norm), the contract
the segmentation and scene heads build on.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformer


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of a Swin encoder; stored in model packages and checkpoints as JSON."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    patch_size: int = 4
    window_size: int = 6
    in_chans: int = 3
    img_size: int = 192
    name: str = "custom"

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} mismatch")
        for dim, heads in zip(self.stage_channels, self.num_heads, strict=True):
            if heads < 1 or dim % heads:
                raise ValueError(f"{heads} attention heads do not divide {dim} channels")
        if min(self.depths) < 1 or min(self.embed_dim, self.patch_size, self.window_size,
                                       self.in_chans, self.img_size) < 1:
            raise ValueError(f"encoder config has a non-positive size: {self}")
        if self.img_size % self.reduction:
            # every patch merging must see an even feature map, or stage shapes get padded
            raise ValueError(f"img_size {self.img_size} is not a multiple of {self.reduction}")

    @property
    def stage_channels(self) -> list[int]:
        return [self.embed_dim * 2**i for i in range(len(self.depths))]

    @property
    def strides(self) -> list[int]:
        return [self.patch_size * 2**i for i in range(len(self.depths))]

    @property
    def reduction(self) -> int:
        """Total downsampling of the last stage (32 for a 4-stage, patch-4 Swin)."""
        return self.strides[-1]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["depths"] = list(self.depths)
        data["num_heads"] = list(self.num_heads)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> EncoderConfig:
        """Accept the dict `to_json` makes, or its JSON text (as in safetensors metadata)."""
        if isinstance(data, str):
            data = json.loads(data)
        if not isinstance(data, Mapping):
            raise ValueError(f"encoder config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown encoder config fields: {sorted(unknown)}")
        return cls(**dict(data))

    def with_input(
        self, img_size: int | None = None, window_size: int | None = None
    ) -> EncoderConfig:
        """Same weights' shapes (up to position tables) at another tile size or window."""
        return replace(
            self,
            img_size=self.img_size if img_size is None else int(img_size),
            window_size=self.window_size if window_size is None else int(window_size),
        )


_TABLE = "relative_position_bias_table"

CONFIGS: dict[str, EncoderConfig] = {
    # The paper's student: Swin-B, window 6 at 192 px (SimMIM-style pretraining size).
    "base": EncoderConfig(128, (2, 2, 18, 2), (4, 8, 16, 32), 4, 6, 3, 192, "base"),
    # ~2.3 M parameters: CPU tests and the demo train in seconds to minutes. Two blocks
    # per stage so every stage has a shifted-window block, as in the real model.
    "tiny": EncoderConfig(32, (2, 2, 2, 2), (2, 4, 8, 16), 4, 6, 3, 192, "tiny"),
}


def resize_bias_table(table: torch.Tensor, window: int) -> torch.Tensor:
    """Bicubic resize of a ((2w-1)^2, heads) table to window `window`.

    Plain bicubic over the (2w-1) x (2w-1) offset grid, as Microsoft's Swin fine-tuning
    does; used both for checkpoints and `set_input_size`, so one method is in play.
    """
    rows, heads = table.shape
    side, new_side = math.isqrt(rows), 2 * window - 1
    if side == new_side:
        return table
    grid = table.float().t().reshape(1, heads, side, side)
    grid = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
    return grid.reshape(heads, new_side * new_side).t().contiguous().to(table.dtype)


class SwinEncoder(SwinTransformer):
    """timm Swin whose call returns the four stage feature maps.

    Stage i's output is taken after its blocks and before the next patch merging (timm
    puts merging at the start of stage i+1), with no extra norm; `norm` (the final
    LayerNorm over 8C channels) is kept only so checkpoints round-trip and pretraining
    can use it. The tile size is fixed (`strict_img_size`), so attention masks are
    precomputed; change it with `set_input_size`.
    """

    def __init__(
        self, config: EncoderConfig, *, drop_path_rate: float = 0.0, init_weights: bool = True
    ) -> None:
        # init_weights=False keeps PyTorch's per-layer defaults and skips timm's second
        # pass: seconds saved for Swin-B when a checkpoint overwrites everything anyway
        super().__init__(
            img_size=config.img_size,
            patch_size=config.patch_size,
            in_chans=config.in_chans,
            num_classes=0,
            global_pool="",
            embed_dim=config.embed_dim,
            depths=config.depths,
            num_heads=config.num_heads,
            window_size=config.window_size,
            strict_img_size=True,
            drop_path_rate=drop_path_rate,
            weight_init="" if init_weights else "skip",
        )
        self.config = config
        self.out_channels = config.stage_channels
        self.strides = config.strides

    @property
    def timm_model(self) -> SwinTransformer:
        """The timm model (this object): stages in `layers`, merging at each stage's start."""
        return self

    def forward_patch_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, C, H, W) -> normalised patch tokens (B, H/4, W/4, embed_dim), NHWC.

        Pretraining swaps masked tokens for its mask token here, then calls
        `forward_from_tokens`.
        """
        return self.patch_embed(x)

    def forward_from_tokens(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Patch tokens (NHWC) -> the four stage outputs (NCHW)."""
        outs = []
        for stage in self.layers:
            x = stage(x)
            outs.append(x.permute(0, 3, 1, 2).contiguous())
        return outs

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        return self.forward_from_tokens(self.forward_patch_embed(x))

    def set_input_size(  # type: ignore[override]
        self, img_size: int | None = None, window_size: int | None = None
    ) -> None:
        """Change the tile size (and optionally the window) in place.

        timm by default scales the window with the image; GFM keeps its window, so the
        current one is passed explicitly unless another is asked for. Relative position
        tables are resized with `resize_bias_table` (timm's own resize is replaced).
        """
        new = self.config.with_input(img_size, window_size)
        before = {n: p.detach().clone() for n, p in self.named_parameters() if n.endswith(_TABLE)}
        with warnings.catch_warnings():  # timm's own table resize warns; its result is replaced
            warnings.simplefilter("ignore", UserWarning)
            super().set_input_size(img_size=(new.img_size, new.img_size),
                                   window_size=new.window_size)
        with torch.no_grad():
            for name, table in self.named_parameters():
                if name.endswith(_TABLE) and table.shape != before[name].shape:
                    window = (math.isqrt(table.shape[0]) + 1) // 2
                    table.copy_(resize_bias_table(before[name], window))
        self.config = new


def build_encoder(
    config: EncoderConfig | str, *, drop_path_rate: float = 0.0, init_weights: bool = True
) -> SwinEncoder:
    """A randomly initialised encoder from a config or the name of one in `CONFIGS`."""
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ValueError(f"unknown encoder config {config!r}; known: {sorted(CONFIGS)}")
        config = CONFIGS[config]
    return SwinEncoder(config, drop_path_rate=drop_path_rate, init_weights=init_weights)
