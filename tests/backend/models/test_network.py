"""Heads and the deployable network: shapes, probabilities, save/load, bf16 path on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gfm_backend.errors import InputError
from gfm_backend.models import build_encoder, load_encoder
from gfm_backend.models.heads import SceneHead, UPerNetHead
from gfm_backend.models.network import build_network, load_network, save_network
from gfm_backend.package import ModelSpec, default_classes
from gfm_backend.runtime import TorchPredictor


def tiny_spec(task: str = "segmentation", n: int = 3) -> ModelSpec:
    enc = build_encoder("tiny")
    return ModelSpec(task=task, classes=default_classes([f"c{i}" for i in range(n)]),
                     encoder=enc.config.to_json(), head={"channels": 32})


def test_heads_shapes():
    feats = [torch.randn(2, c, 48 // 2**i, 48 // 2**i) for i, c in enumerate((32, 64, 128, 256))]
    assert UPerNetHead([32, 64, 128, 256], 5, channels=16)(feats).shape == (2, 5, 48, 48)
    assert SceneHead([32, 64, 128, 256], 5)(feats).shape == (2, 5)


@pytest.mark.parametrize("task", ["segmentation", "scene_classification"])
def test_network_outputs_probabilities(task):
    net = build_network(tiny_spec(task)).eval()
    with torch.no_grad():
        p = net(torch.randn(2, 3, 192, 192))
    assert p.shape == ((2, 3, 192, 192) if task == "segmentation" else (2, 3))
    torch.testing.assert_close(p.sum(dim=1), torch.ones_like(p.sum(dim=1)))


def test_save_load_round_trip_and_encoder_reuse(tmp_path):
    spec = tiny_spec()
    net = build_network(spec).eval()
    save_network(net, spec, tmp_path)
    again = load_network(tmp_path, spec)
    x = torch.randn(1, 3, 192, 192)
    with torch.no_grad():
        torch.testing.assert_close(net(x), again(x))
        enc = load_encoder(tmp_path).eval()  # a model package is also an encoder checkpoint
        for a, b in zip(enc(x), net.encoder(x), strict=True):
            torch.testing.assert_close(a, b)
    wrong = tiny_spec(n=5)
    with pytest.raises(InputError, match="model.safetensors"):
        load_network(tmp_path, wrong)


def test_bf16_autocast_path_agrees_on_cpu():
    """The CUDA path's bf16 autocast, exercised on the CPU."""
    torch.manual_seed(0)
    net = build_network(tiny_spec()).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 192, 192)).astype(np.float32)
    fp32 = TorchPredictor(net, torch.device("cpu"), bf16=False)(x)
    bf16 = TorchPredictor(net, torch.device("cpu"), bf16=True)(x)
    assert bf16.dtype == np.float32
    assert (fp32.argmax(1) == bf16.argmax(1)).mean() > 0.9
    assert "bf16" in TorchPredictor(net, torch.device("cpu"), bf16=True).description
