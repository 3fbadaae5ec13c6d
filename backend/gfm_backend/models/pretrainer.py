"""The GFM continual-pretraining model: masked image modelling plus teacher distillation.

What the official code (mmendiet/GFM `models/teacher.py`, built on SimMIM) computes,
and so what this module computes:

- student: Swin at 192 px / window 6 with a learned `mask_token` that replaces the
  masked patch embeddings (after `patch_embed` and its norm): x*(1-w) + token*w;
- stages 1-3 and stage 3's patch merging give a (B, H/32, W/32, 8C) map; its average
  (no norm) is the student's vector, which goes through `projector` (Linear 8C -> 8C);
- stage 4's blocks and the final `norm` give the reconstruction features, decoded by
  `Conv2d(8C, 32*32*in_chans, 1)` + `PixelShuffle(32)` back to pixels;
- teacher: the same Swin at 224 px / window 7, frozen, fed the UNMASKED image resized
  to 224 (bilinear, align_corners=True); its vector is made the same way (no norm);
- loss = sum(|x_rec - x| over masked pixels and channels) / (masked pixels + 1e-5)
  / in_chans  +  alpha * -mean_b cos(projector(student_vec), teacher_vec), alpha = 1.

State-dict names follow the official `gfm.pth` (`encoder.mask_token`, `encoder.*`,
`teacher.*`, `decoder.0.*`, `projector.*`), with the Swins in timm layout; the checkpoint
functions convert Microsoft layout on load.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models import checkpoint_seq
from torch import nn

from ..errors import InputError
from .checkpoints import (
    CONFIG_METADATA_KEY,
    encoder_state_dict,
    infer_config,
    load_state_dict_into,
    read_state_dict,
    resolve_weights_path,
    save_safetensors_atomic,
    swin_prefixes,
)
from .masking import upsample_mask
from .swin import CONFIGS, EncoderConfig, SwinEncoder

PRETRAINER_METADATA_KEY = "gfm_pretrainer_config"
TEACHER_IMG_SIZE = 224  # the official code hard-codes the teacher's input size and window
TEACHER_WINDOW = 7
ALPHA = 1.0
MASK_LOSS_EPS = 1e-5
_PARTS = ("encoder.", "teacher.", "decoder.", "projector.")


def teacher_config(student: EncoderConfig) -> EncoderConfig:
    """The teacher's shape: the student's architecture at 224 px, window 7."""
    return student.with_input(TEACHER_IMG_SIZE, TEACHER_WINDOW)


class MaskedSwinEncoder(SwinEncoder):
    """The student: a `SwinEncoder` plus SimMIM's learned mask token.

    Still a `SwinEncoder` (its call gives the four stage maps), so fine-tuning code can
    take `pretrainer.encoder` as it is; `mask_token` is simply ignored there.
    """

    def __init__(
        self, config: EncoderConfig, *, drop_path_rate: float = 0.0, init_weights: bool = True
    ) -> None:
        super().__init__(config, drop_path_rate=drop_path_rate, init_weights=init_weights)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        if init_weights:
            trunc_normal_(self.mask_token, std=0.02)  # as SimMIM initialises it

    def forward_masked(
        self, images: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction features NCHW after stage 4 + norm, pooled stage-3-merged vector)."""
        x = self.forward_patch_embed(images)  # (B, H/4, W/4, C), after patch_embed's norm
        w = mask.unsqueeze(-1).to(x.dtype)
        x = x * (1.0 - w) + self.mask_token.to(x.dtype) * w
        merged = merged_stage3(self, x)
        vector = merged.mean(dim=(1, 2))
        features = self.norm(_run_blocks(self.layers[-1], merged))
        return features.permute(0, 3, 1, 2), vector


def merged_stage3(encoder: SwinEncoder, tokens: torch.Tensor) -> torch.Tensor:
    """NHWC tokens -> stages 1..n-1 and the last stage's patch merging (8C, stride 32).

    In timm layout the merging opens the last stage; in the official (Microsoft) layout
    it closes stage 3, which is why the official `layers[:-1]` includes it.
    """
    stages = list(encoder.layers)
    for stage in stages[:-1]:
        tokens = stage(tokens)
    merge: nn.Module = stages[-1].downsample  # type: ignore[assignment]
    return merge(tokens)


def _run_blocks(stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
    blocks: nn.Module = stage.blocks  # type: ignore[assignment]
    if getattr(stage, "grad_checkpointing", False) and torch.is_grad_enabled():
        return checkpoint_seq(blocks, x)
    return blocks(x)


def masked_l1(
    reconstruction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, patch_size: int
) -> torch.Tensor:
    """SimMIM's loss: L1 summed over masked pixels and channels, / (masked pixels + 1e-5) / C.

    One ratio over the whole batch (not a mean of per-sample means); fp32 under autocast.
    """
    pixels = upsample_mask(mask, patch_size).to(torch.float32)
    error = (reconstruction.float() - target.float()).abs()
    return (error * pixels).sum() / (pixels.sum() + MASK_LOSS_EPS) / target.shape[1]


class GfmPretrainer(nn.Module):
    """Student + frozen teacher + MIM decoder + projector; `forward` returns the losses.

    `teacher=None` is the paper's no-teacher ablation (MIM only): there is then no
    projector, so every parameter gets a gradient (DDP needs no `find_unused_parameters`).
    """

    encoder: MaskedSwinEncoder
    teacher: SwinEncoder | None
    decoder: nn.Sequential
    projector: nn.Linear | None

    def __init__(
        self, encoder: MaskedSwinEncoder, teacher: SwinEncoder | None = None, *, alpha: float = ALPHA
    ) -> None:
        super().__init__()
        config = encoder.config
        width, stride = config.stage_channels[-1], config.reduction
        if teacher is not None and teacher.config.stage_channels[-1] != width:
            raise ValueError(f"teacher width {teacher.config.stage_channels[-1]} != student {width}")
        self.encoder = encoder
        self.register_module("teacher", teacher)
        self.decoder = nn.Sequential(
            nn.Conv2d(width, stride**2 * config.in_chans, kernel_size=1), nn.PixelShuffle(stride)
        )
        self.register_module("projector", nn.Linear(width, width) if teacher is not None else None)
        self.alpha = float(alpha)
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()

    @property
    def config(self) -> EncoderConfig:
        return self.encoder.config

    def train(self, mode: bool = True) -> GfmPretrainer:
        """The teacher stays in eval mode whatever the parent is switched to."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the student's blocks in backward: Swin-B at large batches on small GPUs."""
        self.encoder.set_grad_checkpointing(enable)

    @torch.no_grad()
    def teacher_vector(self, images: torch.Tensor) -> torch.Tensor:
        """Teacher's pooled stage-3-merged features of the unmasked image resized to 224."""
        assert self.teacher is not None
        size = self.teacher.config.img_size
        resized = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=True)
        merged = merged_stage3(self.teacher, self.teacher.forward_patch_embed(resized))
        return merged.mean(dim=(1, 2))

    def forward(
        self, images: torch.Tensor, mask: torch.Tensor, *, return_reconstruction: bool = False
    ) -> dict[str, torch.Tensor]:
        """Images (B, C, H, W), normalised; mask (B, H/p, W/p), 1 = masked.

        Returns `loss` (= loss_mim + alpha * loss_distill), `loss_mim`, `loss_distill`
        (-mean cosine, unweighted; 0 without a teacher), fp32 scalars.
        """
        patch = self.config.patch_size
        expected = (images.shape[0], images.shape[2] // patch, images.shape[3] // patch)
        if tuple(mask.shape) != expected:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match images "
                             f"{tuple(images.shape)}: expected {expected}")
        features, student_vec = self.encoder.forward_masked(images, mask)
        reconstruction = self.decoder(features)
        loss_mim = masked_l1(reconstruction, images, mask, patch)
        if self.teacher is not None and self.projector is not None:
            projected = self.projector(student_vec)
            target = self.teacher_vector(images)
            cos = F.cosine_similarity(projected.float(), target.float(), dim=1)
            loss_distill = -cos.mean()
        else:
            loss_distill = loss_mim.new_zeros(())
        out = {"loss": loss_mim + self.alpha * loss_distill,
               "loss_mim": loss_mim, "loss_distill": loss_distill}
        if return_reconstruction:
            out["reconstruction"] = reconstruction
        return out


# ---------------------------------------------------------------- building and loading


def build_pretrainer(
    config: EncoderConfig | str = "base",
    *,
    teacher: SwinEncoder | str | os.PathLike[str] | None = None,
    alpha: float = ALPHA,
    drop_path_rate: float = 0.0,
) -> GfmPretrainer:
    """A randomly initialised student (as in the paper) with an optional teacher.

    `teacher`: a loaded encoder, or a checkpoint path given to `load_teacher`
    (ImageNet-22k Swin, Microsoft or timm layout); None for MIM only.
    """
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ValueError(f"unknown encoder config {config!r}; known: {sorted(CONFIGS)}")
        config = CONFIGS[config]
    if isinstance(teacher, SwinEncoder):
        problem = _architecture_problem(teacher.config, config)
        if problem:
            raise ValueError(problem)
    elif teacher is not None:
        teacher = load_teacher(teacher, like=config)
    student = MaskedSwinEncoder(config, drop_path_rate=drop_path_rate)
    return GfmPretrainer(student, teacher, alpha=alpha)


def _architecture_problem(found: EncoderConfig, student: EncoderConfig) -> str | None:
    def text(c: EncoderConfig) -> str:
        return (f"embed {c.embed_dim}, depths {list(c.depths)}, heads {list(c.num_heads)}, "
                f"patch {c.patch_size}, {c.in_chans} bands")

    if text(found) == text(student):
        return None
    return (f"teacher is a Swin with {text(found)}; GFM distils from the student's own "
            f"architecture ({text(student)})")


def _teacher_prefix(sd: Mapping[str, Any]) -> str | None:
    """'teacher.' in a GFM checkpoint; otherwise the checkpoint code's usual choice."""
    return "teacher." if "teacher." in swin_prefixes(sd) else None


def _encoder_from(
    weights: Mapping[str, torch.Tensor],
    config: EncoderConfig,
    source: object,
    *,
    mask_token: torch.Tensor | None = None,
    drop_path_rate: float = 0.0,
) -> SwinEncoder:
    """Build one Swin of `config` and fill it with timm-layout `weights` (strict)."""
    weights = dict(weights)
    if mask_token is not None:
        encoder: SwinEncoder = MaskedSwinEncoder(config, drop_path_rate=drop_path_rate,
                                                 init_weights=False)
        weights["mask_token"] = mask_token
    else:
        encoder = SwinEncoder(config, drop_path_rate=drop_path_rate, init_weights=False)
    load_state_dict_into(encoder, weights, strict=True, source=source)
    return encoder


def load_teacher(
    path: str | os.PathLike[str], *, like: EncoderConfig | str | None = None
) -> SwinEncoder:
    """A frozen teacher at 224 px / window 7 from a Swin checkpoint.

    Accepts an ImageNet-22k Swin (Microsoft or timm layout, .pth or .safetensors), the
    `teacher.` of a GFM checkpoint, or one of our encoder files; position tables are
    resized if its window is not 7. With `like` (the student's config) the architecture
    must match, else InputError naming the file.
    """
    sd, _ = read_state_dict(path)
    source = resolve_weights_path(path)
    weights = encoder_state_dict(sd, _teacher_prefix(sd), source=source)
    found = infer_config(weights, source=source)
    if like is not None:
        problem = _architecture_problem(found, CONFIGS[like] if isinstance(like, str) else like)
        if problem:
            raise InputError(source, problem)
    teacher = _encoder_from(weights, teacher_config(found), source)
    teacher.requires_grad_(False)
    return teacher.eval()


def load_pretrainer(
    path: str | os.PathLike[str],
    *,
    teacher: bool | None = None,
    alpha: float | None = None,
    drop_path_rate: float = 0.0,
) -> GfmPretrainer:
    """The whole pretraining model from the official `gfm.pth` or our own checkpoint.

    `teacher`: None keeps the file's teacher if it has one, False drops it (MIM only),
    True requires one. `alpha`: by default the file's (`ALPHA` in gfm.pth's config).
    """
    sd, meta = read_state_dict(path)
    source = resolve_weights_path(path)
    tops = {k.split(".", 1)[0] + "." for k in sd}
    if not tops <= set(_PARTS) or "decoder.0.weight" not in sd or "encoder.mask_token" not in sd:
        raise InputError(source, "is not a GFM pretraining checkpoint (expected encoder.mask_token, "
                                 f"decoder and projector weights; found {sorted(tops)})")
    student_cfg, teacher_cfg, file_alpha = _recorded_configs(sd, meta, source)
    if teacher is True and teacher_cfg is None:
        raise InputError(source, "has no teacher weights")
    if teacher_cfg is not None and (problem := _architecture_problem(teacher_cfg, student_cfg)):
        raise InputError(source, problem)
    use_teacher = teacher_cfg is not None and teacher is not False
    encoder = _encoder_from(encoder_state_dict(sd, "encoder.", source=source), student_cfg, source,
                            mask_token=sd["encoder.mask_token"], drop_path_rate=drop_path_rate)
    teacher_model = None
    if use_teacher:
        weights = encoder_state_dict(sd, "teacher.", source=source)
        assert teacher_cfg is not None
        teacher_model = _encoder_from(weights, teacher_cfg, source)
    model = GfmPretrainer(cast(MaskedSwinEncoder, encoder), teacher_model,
                          alpha=file_alpha if alpha is None else alpha)
    heads = {k: v for k, v in sd.items() if k.startswith(("decoder.", "projector."))}
    if model.projector is None:
        heads = {k: v for k, v in heads.items() if not k.startswith("projector.")}
    try:
        result = model.load_state_dict(heads, strict=False)
    except RuntimeError as exc:
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise InputError(source, f"decoder/projector do not fit the encoder: {detail}") from None
    missing = [k for k in result.missing_keys if k.startswith(("decoder.", "projector."))]
    if missing:
        raise InputError(source, f"is missing pretraining weights: {', '.join(missing)}")
    return model


def _recorded_configs(
    sd: Mapping[str, torch.Tensor], meta: Mapping[str, Any], source: Path
) -> tuple[EncoderConfig, EncoderConfig | None, float]:
    """(student config, teacher config or None, alpha) from our metadata or the weights."""
    recorded = meta.get(PRETRAINER_METADATA_KEY)
    if recorded is not None:
        try:
            data = json.loads(recorded)
            student = EncoderConfig.from_json(data["encoder"])
            teacher = EncoderConfig.from_json(data["teacher"]) if data.get("teacher") else None
            return student, teacher, float(data.get("alpha", ALPHA))
        except (ValueError, TypeError, KeyError) as exc:
            raise InputError(source, f"has an unreadable '{PRETRAINER_METADATA_KEY}': {exc}") from None
    sub = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    student = infer_config(sub, source=source)
    teacher = None
    if "teacher.patch_embed.proj.weight" in sd:
        sub = {k[len("teacher."):]: v for k, v in sd.items() if k.startswith("teacher.")}
        teacher = teacher_config(infer_config(sub, source=source))
    official = meta.get("config")
    alpha = official.get("ALPHA", ALPHA) if isinstance(official, Mapping) else ALPHA
    return student, teacher, float(alpha)


def save_pretrainer(
    model: GfmPretrainer,
    path: str | os.PathLike[str],
    extra_metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Whole model as safetensors (timm layout), configs in the metadata; atomic.

    `load_encoder` reads the student out of the same file (`gfm_encoder_config`).
    """
    teacher = model.teacher.config.to_json() if model.teacher is not None else None
    meta = {
        PRETRAINER_METADATA_KEY: json.dumps(
            {"encoder": model.config.to_json(), "teacher": teacher, "alpha": model.alpha}),
        CONFIG_METADATA_KEY: json.dumps(model.config.to_json()),
    }
    return save_safetensors_atomic(model.state_dict(), path, {**(extra_metadata or {}), **meta})
