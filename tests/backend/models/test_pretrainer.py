"""The GFM pretraining model against an independent reference of the official objective."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from gfm_backend.errors import InputError
from gfm_backend.models import (
    CONFIGS,
    GfmPretrainer,
    build_encoder,
    build_pretrainer,
    load_encoder,
    load_pretrainer,
    read_state_dict,
    save_pretrainer,
)
from gfm_backend.models.masking import MaskGenerator
from gfm_backend.models.pretrainer import load_teacher, teacher_config

from .pretrain_reference import ReferenceGfm, write_official_gfm
from .swin_reference import official_keys, reference_for

TINY = CONFIGS["tiny"]
LOSSES = ("loss", "loss_mim", "loss_distill")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def batch(config=TINY, n: int = 2, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n, config.in_chans, config.img_size, config.img_size, generator=gen)
    masks = MaskGenerator(config.img_size, 32, config.patch_size)(n, generator=gen)
    return images, masks


def assert_losses_close(got: dict, want: dict, rel: float = 1e-5) -> None:
    for key in LOSSES:
        a, b = float(got[key]), float(want[key])
        assert abs(a - b) <= rel * abs(b) + 1e-12, f"{key}: {a} vs reference {b}"


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> tuple[Path, ReferenceGfm]:
    ref = ReferenceGfm(TINY, seed=5)
    path = write_official_gfm(tmp_path_factory.mktemp("gfm") / "gfm.pth", ref, TINY)
    return path, ref


@pytest.fixture(scope="module")
def loaded(official) -> GfmPretrainer:
    return load_pretrainer(official[0])


def test_official_checkpoint_matches_reference(official, loaded) -> None:
    path, ref = official
    assert set(read_state_dict(path)[0]) == set(ref.state_dict())
    assert (loaded.config.window_size, loaded.config.img_size) == (6, 192)
    assert (loaded.teacher.config.window_size, loaded.teacher.config.img_size) == (7, 224)
    images, masks = batch()
    with torch.no_grad():
        want = ref.losses(images, masks)
        got = loaded.train()(images, masks)
    assert_losses_close(got, want)
    assert float(got["loss_distill"]) != 0.0
    assert torch.isclose(got["loss"], got["loss_mim"] + got["loss_distill"])


def test_gradients_reach_student_not_teacher(loaded) -> None:
    model = loaded.train()
    model.zero_grad(set_to_none=True)
    images, masks = batch(n=1, seed=8)
    model(images, masks)["loss"].backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("teacher.") for n in trainable)
    for name in ("encoder.mask_token", "encoder.patch_embed.proj.weight",
                 "encoder.layers.3.blocks.1.mlp.fc2.weight", "encoder.norm.weight",
                 "decoder.0.weight", "projector.weight"):
        grad = trainable[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(p.grad is not None for p in trainable.values())  # nothing unused (DDP)
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert not model.teacher.training and model.encoder.training
    model.zero_grad(set_to_none=True)


def test_without_teacher_is_mim_only(official) -> None:
    path, ref = official
    model = load_pretrainer(path, teacher=False)
    assert model.teacher is None and model.projector is None
    images, masks = batch()
    with torch.no_grad():
        got = model(images, masks)
        want = ref.losses(images, masks)
    assert float(got["loss_distill"]) == 0.0 and torch.equal(got["loss"], got["loss_mim"])
    assert abs(float(got["loss_mim"]) - float(want["loss_mim"])) <= 1e-5 * float(want["loss_mim"])

    fresh = build_pretrainer("tiny", teacher=None)
    assert fresh.teacher is None and fresh.projector is None
    out = fresh(images, masks)
    out["loss"].backward()
    assert all(p.grad is not None for p in fresh.parameters())


def test_masked_pixels_only(loaded) -> None:
    """The L1 weighs masked pixels only: nothing masked -> 0, everything -> plain mean L1."""
    model = loaded.eval()
    images, masks = batch(n=1)
    with torch.no_grad():
        none = model(images, torch.zeros_like(masks))
        full = model(images, torch.ones_like(masks), return_reconstruction=True)
    assert float(none["loss_mim"]) == 0.0
    mean_l1 = (full["reconstruction"] - images).abs().mean()
    assert torch.isclose(full["loss_mim"], mean_l1, rtol=1e-5)
    with pytest.raises(ValueError, match="mask shape"):
        model(images, masks[:, :-1])


def test_own_checkpoint_round_trip_is_exact(loaded, tmp_path) -> None:
    path = save_pretrainer(loaded, tmp_path / "run" / "last.safetensors", {"step": 17})
    assert not list(path.parent.glob(".*partial"))
    again = load_pretrainer(path)
    mine, theirs = loaded.state_dict(), again.state_dict()
    assert list(mine) == list(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert again.teacher.config == loaded.teacher.config and again.config == loaded.config
    images, masks = batch()
    with torch.no_grad():
        a, b = loaded.eval()(images, masks), again(images, masks)
    assert all(torch.equal(a[k], b[k]) for k in LOSSES)
    _, meta = read_state_dict(path)
    assert meta["step"] == "17"

    student = load_encoder(path)  # the same file serves as an encoder checkpoint
    weights = student.state_dict()
    assert all(torch.equal(v, mine[f"encoder.{k}"]) for k, v in weights.items())

    mim_only = save_pretrainer(build_pretrainer("tiny"), tmp_path / "mim.safetensors")
    assert load_pretrainer(mim_only).teacher is None
    with pytest.raises(InputError, match="mim.safetensors"):
        load_pretrainer(mim_only, teacher=True)


def test_teacher_checkpoints(tmp_path) -> None:
    config = teacher_config(TINY)
    ref = reference_for(config, seed=4)
    microsoft = dict(ref.state_dict())
    microsoft["head.weight"] = torch.randn(7, 256)
    microsoft["head.bias"] = torch.zeros(7)
    ms_path = tmp_path / "swin_tiny_22k.pth"
    torch.save({"model": microsoft}, ms_path)
    teacher = load_teacher(ms_path, like="tiny")
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert (teacher.config.img_size, teacher.config.window_size) == (224, 7)

    timm_path = tmp_path / "timm.safetensors"
    save_file(teacher.state_dict(), timm_path)
    other = load_teacher(timm_path, like=TINY)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in teacher.state_dict().items())

    model = build_pretrainer("tiny", teacher=ms_path)
    assert model.teacher is not None and not model.teacher.training
    images, _ = batch(n=1)
    with torch.no_grad():
        x = torch.nn.functional.interpolate(images, size=(224, 224), mode="bilinear",
                                            align_corners=True)
        want = ref.layers[-2].downsample(ref(x)[2].permute(0, 2, 3, 1)).mean((1, 2))
        got = model.teacher_vector(images)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_wrong_teacher_architecture_names_the_file(tmp_path) -> None:
    wider = replace(teacher_config(TINY), embed_dim=48, num_heads=(3, 6, 12, 24))
    path = tmp_path / "swin_small_22k.pth"
    torch.save({"model": reference_for(wider).state_dict()}, path)
    with pytest.raises(InputError, match="swin_small_22k.pth") as caught:
        build_pretrainer("tiny", teacher=path)
    assert "embed 48" in str(caught.value)
    with pytest.raises(ValueError, match="architecture"):
        build_pretrainer("tiny", teacher=build_encoder(wider))


def test_alpha_comes_from_the_official_config(tmp_path) -> None:
    ref = ReferenceGfm(TINY, seed=6, alpha=0.5)
    path = write_official_gfm(tmp_path / "gfm_alpha.pth", ref, TINY)
    model = load_pretrainer(path)
    assert model.alpha == 0.5 and load_pretrainer(path, alpha=2.0).alpha == 2.0
    images, masks = batch(n=1)
    with torch.no_grad():
        assert_losses_close(model(images, masks), ref.losses(images, masks))


def test_not_a_pretraining_checkpoint(tmp_path) -> None:
    path = tmp_path / "encoder_only.safetensors"
    save_file({f"encoder.{k}": v for k, v in build_encoder("tiny").state_dict().items()},
              path, metadata={"gfm_encoder_config": json.dumps(TINY.to_json())})
    with pytest.raises(InputError, match="encoder_only.safetensors"):
        load_pretrainer(path)
    with pytest.raises(InputError, match="missing.pth"):
        load_pretrainer(tmp_path / "missing.pth")


@pytest.mark.slow
def test_full_size_official_layout_matches_reference(tmp_path) -> None:
    """Swin-B student and teacher in exactly the official gfm.pth layout."""
    keys = official_keys()
    if keys is None:
        pytest.skip("gfm_pth_keys.json not available (set GFM_REFERENCE_DIR)")
    base = CONFIGS["base"]
    ref = ReferenceGfm(base, seed=21)
    layout = {k: (list(v.shape), str(v.dtype).removeprefix("torch."))
              for k, v in ref.state_dict().items()}
    assert list(layout) == list(keys) and layout == keys
    path = write_official_gfm(tmp_path / "gfm.pth", ref, base)
    model = load_pretrainer(path)
    assert replace(model.config, name="base") == base
    images, masks = batch(base, n=1, seed=4)
    with torch.no_grad():
        want = ref.losses(images, masks)
        got = model.train()(images, masks)
    assert_losses_close(got, want)
