"""Speed levers change how the step runs, never what it computes."""

from __future__ import annotations

import pytest
import torch

from gfm_backend.models import CONFIGS, build_encoder, load_pretrainer
from gfm_backend.training.speed import (
    compile_blocks,
    resolve_attention,
    set_attention,
)

from ..models.pretrain_reference import ReferenceGfm, write_official_gfm
from ..models.test_pretrainer import LOSSES, assert_losses_close, batch

TINY = CONFIGS["tiny"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_auto_attention_is_fused_on_cuda_only() -> None:
    assert resolve_attention("auto", torch.device("cuda")) == "sdpa"
    assert resolve_attention("auto", torch.device("cpu")) == "eager"
    assert resolve_attention("sdpa", torch.device("cpu")) == "sdpa"
    with pytest.raises(ValueError, match="flash"):
        resolve_attention("flash", torch.device("cpu"))


def test_fused_attention_keeps_the_official_loss_and_gradients(tmp_path) -> None:
    ref = ReferenceGfm(TINY, seed=5)
    model = load_pretrainer(write_official_gfm(tmp_path / "gfm.pth", ref, TINY)).train()
    images, masks = batch()
    with torch.no_grad():
        want = ref.losses(images, masks)

    results = {}
    for kind in ("eager", "sdpa"):
        # student 8 blocks + teacher 8 blocks in the tiny config
        assert set_attention(model, kind) == 16
        model.zero_grad(set_to_none=True)
        out = model(images, masks)
        out["loss"].backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[kind] = ({k: out[k].detach() for k in LOSSES}, grads)

    for kind, (losses, _) in results.items():
        assert_losses_close(losses, want), kind
    eager, fused = results["eager"][1], results["sdpa"][1]
    assert eager.keys() == fused.keys() and eager
    for name, g in eager.items():
        torch.testing.assert_close(fused[name], g, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_compiled_blocks_give_the_same_features() -> None:
    torch.manual_seed(0)
    encoder = build_encoder(TINY).eval()
    x = torch.randn(2, 3, 192, 192)
    with torch.no_grad():
        want = encoder(x)
        assert compile_blocks(encoder) == sum(TINY.depths)
        got = encoder(x)
    assert set(encoder.state_dict()) == set(build_encoder(TINY).state_dict())
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
