"""The timm-based encoder against an independent Microsoft-layout Swin and the official layout."""

from __future__ import annotations

import json

import pytest
import torch
from timm.models.swin_transformer import SwinTransformer

from gfm_backend.models import CONFIGS, EncoderConfig, SwinEncoder, build_encoder
from gfm_backend.models.checkpoints import encoder_state_dict
from gfm_backend.models.swin import resize_bias_table

from . import swin_reference
from .swin_reference import ReferenceSwin, assert_close, reference_for


def official_keys() -> dict[str, tuple[list[int], str]]:
    keys = swin_reference.official_keys()
    if keys is None:
        pytest.skip("gfm_pth_keys.json not available (set GFM_REFERENCE_DIR)")
    return keys


def test_configs() -> None:
    base = CONFIGS["base"]
    assert (base.embed_dim, base.depths, base.num_heads) == (128, (2, 2, 18, 2), (4, 8, 16, 32))
    assert (base.patch_size, base.window_size, base.img_size, base.in_chans) == (4, 6, 192, 3)
    for name, config in CONFIGS.items():
        assert config.name == name
        data = config.to_json()
        assert isinstance(data["depths"], list) and isinstance(data["num_heads"], list)
        assert EncoderConfig.from_json(json.dumps(data)) == config
        assert EncoderConfig.from_json(data) == config


@pytest.mark.parametrize(
    "changes",
    [{"num_heads": (3, 4, 8, 16)}, {"img_size": 200}, {"depths": (2, 2, 2)}, {"window_size": 0}],
)
def test_config_rejects_bad_shapes(changes: dict) -> None:
    data = {**CONFIGS["tiny"].to_json(), **changes}
    with pytest.raises(ValueError):
        EncoderConfig.from_json(data)


def test_config_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="mlp_ratio"):
        EncoderConfig.from_json({**CONFIGS["tiny"].to_json(), "mlp_ratio": 3})
    with pytest.raises(ValueError):
        build_encoder("huge")


def test_reference_layout_is_the_official_checkpoint_layout() -> None:
    """Keys, order, shapes and dtypes of the student (w6 @ 192) and teacher (w7 @ 224)."""
    keys = official_keys()
    base = CONFIGS["base"]
    for prefix, config in (("encoder.", base), ("teacher.", base.with_input(224, 7))):
        with torch.device("meta"):
            ref = ReferenceSwin(128, (2, 2, 18, 2), (4, 8, 16, 32), 4, config.window_size, 3,
                                config.img_size)
        got = {prefix + k: (list(v.shape), str(v.dtype).removeprefix("torch."))
               for k, v in ref.state_dict().items()}
        want = {k: v for k, v in keys.items() if k.startswith(prefix) and k != "encoder.mask_token"}
        assert list(got) == list(want)
        assert got == want


def test_encoder_contract() -> None:
    enc = build_encoder("tiny").eval()
    assert isinstance(enc, SwinEncoder) and isinstance(enc.timm_model, SwinTransformer)
    assert enc.out_channels == [32, 64, 128, 256]
    assert enc.strides == [4, 8, 16, 32]
    x = torch.randn(2, 3, 192, 192)
    with torch.no_grad():
        outs = enc(x)
        tokens = enc.forward_patch_embed(x)
        again = enc.forward_from_tokens(tokens)
    assert [tuple(o.shape) for o in outs] == [(2, 32, 48, 48), (2, 64, 24, 24),
                                              (2, 128, 12, 12), (2, 256, 6, 6)]
    assert tuple(tokens.shape) == (2, 48, 48, 32)
    for a, b in zip(outs, again, strict=True):
        assert torch.equal(a, b)
    keys = list(enc.state_dict())
    assert "layers.1.downsample.reduction.weight" in keys
    assert not any(k.startswith("layers.0.downsample") or k.startswith("head") for k in keys)
    assert not any(k.endswith(("attn_mask", "relative_position_index")) for k in keys)


def test_encoder_matches_reference_tiny() -> None:
    config = CONFIGS["tiny"]
    ref = reference_for(config)
    enc = build_encoder(config).eval()
    enc.load_state_dict(encoder_state_dict(ref.state_dict()), strict=True)
    x = torch.randn(2, 3, 192, 192, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_close(enc(x), ref(x))


def test_encoder_matches_reference_window7_224() -> None:
    """The teacher's geometry: 56 -> 7 px maps, the last stage is one unshifted window."""
    config = CONFIGS["tiny"].with_input(224, 7)
    ref = reference_for(config, seed=3)
    enc = build_encoder(config).eval()
    enc.load_state_dict(encoder_state_dict(ref.state_dict()), strict=True)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert_close(enc(x), ref(x))


def test_set_input_size_keeps_window() -> None:
    enc = build_encoder("tiny").eval()
    enc.set_input_size(256)
    assert enc.config.img_size == 256 and enc.config.window_size == 6
    with torch.no_grad():
        outs = enc(torch.randn(1, 3, 256, 256))
    assert [o.shape[-1] for o in outs] == [64, 32, 16, 8]
    table = enc.layers[0].blocks[0].attn.relative_position_bias_table
    assert table.shape[0] == 11 * 11
    before = table.detach().clone()
    enc.set_input_size(224, window_size=7)
    assert enc.config.window_size == 7
    after = enc.layers[0].blocks[0].attn.relative_position_bias_table
    assert torch.equal(after, resize_bias_table(before, 7))
    assert enc.layers[0].blocks[1].attn_mask.shape == (64, 49, 49)


@pytest.mark.slow
def test_encoder_matches_reference_base() -> None:
    config = CONFIGS["base"]
    ref = reference_for(config, seed=5)
    enc = build_encoder(config).eval()
    enc.load_state_dict(encoder_state_dict(ref.state_dict()), strict=True)
    x = torch.randn(1, 3, 192, 192, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert_close(enc(x), ref(x))
