"""An independent GFM pretraining objective in the official (Microsoft/SimMIM) layout.

Written from the paper and the official code's semantics on top of `swin_reference`,
sharing nothing with `gfm_backend.models.pretrainer`. Its `state_dict()` has exactly
the official `gfm.pth` `model` layout: `encoder.mask_token` first, the student's Swin
(merging at the END of each stage, buffers included), `teacher.*`, `decoder.0.*`,
`projector.*`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .swin_reference import ReferenceSwin, randomize_, reference_for

STRIDE = 32  # the decoder's PixelShuffle factor: total downsampling of a 4-stage patch-4 Swin


def _through_stage3(swin: ReferenceSwin, x: torch.Tensor) -> torch.Tensor:
    """Stages 1-3 with their merging (the official `layers[:-1]`): (B, H/32, W/32, 8C)."""
    for stage in swin.layers[:-1]:
        for block in stage.blocks:
            x = block(x)
        x = stage.downsample(x)
    return x


class ReferenceGfm(nn.Module):
    """Student with mask token, frozen teacher at 224 / window 7, decoder, projector."""

    def __init__(self, config: Any, seed: int = 0, teacher: bool = True, alpha: float = 1.0):
        super().__init__()
        c = config
        width = c.embed_dim * 2 ** (len(c.depths) - 1)
        self.encoder = reference_for(c, seed)
        # a direct parameter of the encoder: state_dict lists it before every submodule
        self.encoder.mask_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        if teacher:
            self.teacher = ReferenceSwin(c.embed_dim, c.depths, c.num_heads, c.patch_size, 7,
                                         c.in_chans, 224)
            randomize_(self.teacher, seed + 1)
        else:
            self.teacher = None
        self.decoder = nn.Sequential(nn.Conv2d(width, STRIDE * STRIDE * c.in_chans, 1),
                                     nn.PixelShuffle(STRIDE))
        self.projector = nn.Linear(width, width) if teacher else None
        self.alpha = alpha
        gen = torch.Generator().manual_seed(seed + 2)
        with torch.no_grad():
            self.encoder.mask_token.copy_(torch.randn(1, 1, c.embed_dim, generator=gen))
            for module in (self.decoder[0], self.projector):
                if module is not None:
                    fan_in = module.weight[0].numel()
                    module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / fan_in**0.5)
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
        self.eval()

    def losses(self, img: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """(loss, loss_mim, loss_distill) for normalised images and a (B, H/4, W/4) mask."""
        enc = self.encoder
        patch = enc.patch_embed.proj.kernel_size[0]
        m = mask.to(torch.float32)
        tokens = enc.patch_embed(img)  # (B, h, w, C), after the patch norm
        tokens = tokens * (1 - m[..., None]) + enc.mask_token[0, 0] * m[..., None]
        merged = _through_stage3(enc, tokens)
        student_vec = merged.mean(dim=(1, 2))
        r = merged
        for block in enc.layers[-1].blocks:
            r = block(r)
        rec = self.decoder(enc.norm(r).permute(0, 3, 1, 2))

        pixel_mask = torch.kron(m, torch.ones(1, patch, patch))  # (B, H, W)
        err = (rec - img).abs().sum(dim=1)  # summed over channels
        loss_mim = (err * pixel_mask).sum() / (pixel_mask.sum() + 1e-5) / img.shape[1]

        if self.teacher is None:
            loss_distill = torch.zeros(())
        else:
            with torch.no_grad():
                small = F.interpolate(img, size=(224, 224), mode="bilinear", align_corners=True)
                teacher_vec = _through_stage3(self.teacher, self.teacher.patch_embed(small)).mean((1, 2))
            z = self.projector(student_vec)
            cos = (z * teacher_vec).sum(1) / (z.norm(dim=1) * teacher_vec.norm(dim=1))
            loss_distill = -cos.mean()
        return {"loss": loss_mim + self.alpha * loss_distill, "loss_mim": loss_mim,
                "loss_distill": loss_distill}


def official_yacs_config(config: Any, alpha: float = 1.0):
    """A frozen yacs CfgNode shaped like the one the official script pickles into gfm.pth."""
    from yacs.config import CfgNode as CN

    cfg = CN()
    cfg.MODEL = CN()
    cfg.MODEL.TYPE = "swin"
    cfg.MODEL.NAME = "simmim_pretrain"
    cfg.MODEL.DROP_PATH_RATE = 0.0
    cfg.MODEL.SWIN = CN()
    cfg.MODEL.SWIN.PATCH_SIZE = config.patch_size
    cfg.MODEL.SWIN.EMBED_DIM = config.embed_dim
    cfg.MODEL.SWIN.DEPTHS = list(config.depths)
    cfg.MODEL.SWIN.NUM_HEADS = list(config.num_heads)
    cfg.MODEL.SWIN.WINDOW_SIZE = config.window_size
    cfg.DATA = CN()
    cfg.DATA.IMG_SIZE = config.img_size
    cfg.DATA.MASK_PATCH_SIZE = 32
    cfg.DATA.MASK_RATIO = 0.6
    cfg.TRAIN = CN()
    cfg.TRAIN.BASE_LR = 2e-4
    cfg.TRAIN.CLIP_GRAD = 5.0
    cfg.ALPHA = alpha
    cfg.freeze()
    return cfg


def write_official_gfm(path: Path, ref: ReferenceGfm, config: Any) -> Path:
    """Save `ref` as the official training script does (model, optimizer, config, ...)."""
    optimizer = torch.optim.AdamW(ref.decoder.parameters(), lr=2e-4, weight_decay=0.05)
    torch.save({
        "model": ref.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": {"base_values": [2e-4]},
        "max_accuracy": 0.0,
        "epoch": 99,
        "config": official_yacs_config(config, ref.alpha),
        "amp": {"loss_scaler0": {"loss_scale": 65536.0, "unskipped": 0}},
    }, path)
    return path
