"""An independent Swin Transformer (Liu et al., ICCV 2021) in the original Microsoft layout.

Written from the paper's description to check the timm-based encoder and the checkpoint
converters against something that shares no code with them. Its `state_dict()` has the
layout of the official GFM checkpoint's `encoder.*` / `teacher.*` entries: patch merging
at the END of each stage (`layers.{i}.downsample`), the persistent buffers
`relative_position_index` (int64) and `attn_mask` (only in shifted blocks), and a final
`norm`. `forward` returns each stage's output before its merging, NCHW, with no norm.

Only sizes where every feature map divides into whole windows are supported (as in
the paper's classification setting); no padding.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MASKED = -100.0  # added to attention logits between tokens from different regions


def relative_index(window: int) -> torch.Tensor:
    """(w*w, w*w) index into the (2w-1)^2 table: one entry per 2-D offset between tokens."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    dy = ys[:, None] - ys[None, :] + (window - 1)  # 0 .. 2w-2
    dx = xs[:, None] - xs[None, :] + (window - 1)
    return (dy * (2 * window - 1) + dx).long()


def to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, w*w, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.transpose(2, 3).reshape(-1, window * window, c)


def from_windows(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window, w // window, window, window, c)
    return x.transpose(2, 3).reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """(nW, w*w, w*w) additive mask for the shifted partition.

    After the cyclic shift by `shift`, the last window row/column holds tokens that were
    not neighbours in the image: label each token by which of the three bands (rows
    [0, h-w), [h-w, h-s), [h-s, h)) and columns it lies in, and forbid attention between
    different labels.
    """
    def band(n: int) -> torch.Tensor:
        pos = torch.arange(n)
        return (pos >= n - window).long() + (pos >= n - shift).long()

    labels = band(h)[:, None] * 3 + band(w)[None, :]  # (h, w)
    labels = to_windows(labels[None, :, :, None].float(), window).squeeze(-1)  # (nW, w*w)
    differs = labels[:, :, None] != labels[:, None, :]
    return torch.zeros(differs.shape).masked_fill(differs, MASKED)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> linear embedding (a strided conv) -> LayerNorm."""

    def __init__(self, patch: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(img).permute(0, 2, 3, 1))  # (B, H, W, C)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, plus a learned relative position bias."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        n_win_total, n, c = x.shape
        head_dim = c // self.heads
        qkv = self.qkv(x).reshape(n_win_total, n, 3, self.heads, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        logits = (q * head_dim**-0.5) @ k.transpose(-2, -1)  # (B*nW, heads, n, n)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        logits = logits + bias.reshape(n, n, self.heads).permute(2, 0, 1)[None]
        if mask is not None:
            n_win = mask.shape[0]
            logits = logits.reshape(-1, n_win, self.heads, n, n) + mask[None, :, None]
            logits = logits.reshape(-1, self.heads, n, n)
        out = logits.softmax(dim=-1) @ v  # (B*nW, heads, n, head_dim)
        return self.proj(out.transpose(1, 2).reshape(n_win_total, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm (S)W-MSA + MLP with residuals; odd blocks shift windows by w/2.

    When the feature map is no larger than the window there is a single window: the
    window shrinks to the map and shifting is pointless, so it is disabled.
    """

    def __init__(self, dim: int, heads: int, res: int, window: int, shifted: bool) -> None:
        super().__init__()
        if res <= window:
            window, shift = res, 0
        else:
            shift = window // 2 if shifted else 0
        self.window, self.shift = window, shift
        mask = shifted_window_mask(res, res, window, shift) if shift else None
        self.register_buffer("attn_mask", mask)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(to_windows(y, self.window), self.attn_mask)
        y = from_windows(y, self.window, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens -> concatenated 4C -> LayerNorm -> linear to 2C (no bias)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = x[:, 0::2, 0::2]
        x1 = x[:, 1::2, 0::2]
        x2 = x[:, 0::2, 1::2]
        x3 = x[:, 1::2, 1::2]
        return self.reduction(self.norm(torch.cat([x0, x1, x2, x3], dim=-1)))


class Stage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, res: int, window: int, merge: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, res, window, shifted=i % 2 == 1) for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if merge else None


class ReferenceSwin(nn.Module):
    """Swin backbone in Microsoft layout; returns the stage outputs before merging."""

    def __init__(
        self,
        embed_dim: int,
        depths: tuple[int, ...],
        num_heads: tuple[int, ...],
        patch_size: int = 4,
        window_size: int = 7,
        in_chans: int = 3,
        img_size: int = 224,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        res = img_size // patch_size
        stages = []
        for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            dim = embed_dim * 2**i
            if res % min(res, window_size):
                raise ValueError(f"stage {i}: {res}x{res} map does not split into windows")
            last = i == len(depths) - 1
            stages.append(Stage(dim, depth, heads, res, window_size, merge=not last))
            res //= 2
        self.layers = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(embed_dim * 2 ** (len(depths) - 1))

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(img)
        outs = []
        for stage in self.layers:
            for block in stage.blocks:
                x = block(x)
            outs.append(x.permute(0, 3, 1, 2).contiguous())
            if stage.downsample is not None:
                x = stage.downsample(x)
        return outs


# ---------------------------------------------------------------- test helpers


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter with random values of a sane scale (default inits hide bugs:
    LayerNorm weights of exactly 1 and zero bias tables make many mistakes invisible)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("relative_position_bias_table"):
                p.copy_(noise)
            elif p.ndim == 1 and name.endswith("weight"):
                p.copy_(1 + 0.2 * noise)
            elif p.ndim == 1:
                p.copy_(0.2 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)
    return module


def reference_for(config: Any, seed: int = 0) -> ReferenceSwin:
    """A randomly filled reference with the shape of an `EncoderConfig` (duck-typed)."""
    c = config
    ref = ReferenceSwin(c.embed_dim, c.depths, c.num_heads, c.patch_size, c.window_size,
                        c.in_chans, c.img_size)
    return randomize_(ref, seed).eval()


def assert_close(outs: list[torch.Tensor], expected: list[torch.Tensor], tol: float = 1e-4) -> None:
    """Same four stage shapes, max error below `tol` relative to each stage's largest value."""
    assert len(outs) == len(expected) == 4
    for got, want in zip(outs, expected, strict=True):
        assert got.shape == want.shape
        rel = float((got - want).detach().abs().max() / want.detach().abs().max())
        assert rel < tol, f"relative error {rel:.2e} for a {tuple(want.shape)} stage"


def reference_dir() -> Path | None:
    """`GFM_REFERENCE_DIR`, else `shared/reference` beside the repository checkout."""
    repo_root = Path(__file__).resolve().parents[3]
    for candidate in (os.environ.get("GFM_REFERENCE_DIR"), repo_root.parent / "shared/reference"):
        if candidate and (Path(candidate) / "gfm_pth_keys.json").is_file():
            return Path(candidate)
    return None


def official_keys() -> dict[str, tuple[list[int], str]] | None:
    """The official gfm.pth `model` entries: key -> (shape, dtype name), in file order."""
    folder = reference_dir()
    if folder is None:
        return None
    data = json.loads((folder / "gfm_pth_keys.json").read_text())["keys"]
    return {k: (list(v[0]), v[1]) for k, v in data.items()}
