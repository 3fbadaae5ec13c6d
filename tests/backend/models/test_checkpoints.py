"""Checkpoint reading and conversion: official GFM, Microsoft/timm Swin, our files, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gfm_backend.errors import InputError
from gfm_backend.models import (
    CONFIGS,
    build_encoder,
    encoder_state_dict,
    load_encoder,
    read_state_dict,
    save_encoder,
)
from gfm_backend.models.checkpoints import load_state_dict_into
from gfm_backend.models.swin import resize_bias_table

from .checkpoint_files import write_22k_checkpoint, write_gfm_checkpoint
from .swin_reference import ReferenceSwin, assert_close, official_keys, randomize_

TINY = CONFIGS["tiny"]


def image(size: int, chans: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, chans, size, size, generator=torch.Generator().manual_seed(seed))


def run(encoder, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return encoder.eval()(x)


@pytest.fixture(scope="module")
def gfm_file(tmp_path_factory) -> tuple[Path, ReferenceSwin, ReferenceSwin]:
    path = tmp_path_factory.mktemp("gfm") / "gfm.pth"
    student, teacher = write_gfm_checkpoint(path, TINY)
    return path, student, teacher


@pytest.fixture(scope="module")
def swin22k_file(tmp_path_factory) -> tuple[Path, ReferenceSwin]:
    path = tmp_path_factory.mktemp("22k") / "swin_tiny_patch4_window7_224_22k.pth"
    return path, write_22k_checkpoint(path, TINY.with_input(224, 7))


# ---------------------------------------------------------------- official GFM checkpoint


def test_gfm_checkpoint_reads_with_metadata(gfm_file) -> None:
    path, _, _ = gfm_file
    before = torch.serialization.get_safe_globals()
    tensors, meta = read_state_dict(path)
    assert torch.serialization.get_safe_globals() == before  # nothing left allow-listed
    assert meta["epoch"] == 99 and meta["max_accuracy"] == 0.0
    assert meta["config"]["MODEL"]["SWIN"]["DEPTHS"] == [2, 2, 2, 2]
    assert type(meta["config"]["MODEL"]) is dict
    assert "optimizer" not in meta
    assert {"encoder.mask_token", "decoder.0.weight", "projector.bias"} <= set(tensors)


def test_gfm_student_matches_reference(gfm_file) -> None:
    path, student, _ = gfm_file
    enc = load_encoder(path)
    assert (enc.config.embed_dim, enc.config.depths, enc.config.num_heads) == (
        TINY.embed_dim, TINY.depths, TINY.num_heads)
    assert (enc.config.window_size, enc.config.img_size) == (6, 192)
    x = image(192)
    assert_close(run(enc, x), student(x))


def test_gfm_teacher_by_prefix(gfm_file) -> None:
    path, _, teacher = gfm_file
    enc = load_encoder(path, prefix="teacher")
    assert (enc.config.window_size, enc.config.img_size) == (7, 224)
    x = image(224)
    assert_close(run(enc, x), teacher(x))
    with pytest.raises(InputError, match="gfm.pth"):
        load_encoder(path, prefix="backbone.")


def test_gfm_checkpoint_loads_without_yacs(gfm_file, tmp_path) -> None:
    """The stand-in must do all the work: yacs is made unimportable in a fresh process."""
    path, _, _ = gfm_file
    out = tmp_path / "student.safetensors"
    code = textwrap.dedent("""
        import sys
        sys.modules["yacs"] = None
        sys.modules["yacs.config"] = None
        try:
            import yacs.config  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("yacs is still importable")
        from safetensors.torch import save_file
        from gfm_backend.models import load_encoder, read_state_dict
        _, meta = read_state_dict(sys.argv[1])
        assert meta["config"]["DATA"]["MASK_RATIO"] == 0.6, meta
        save_file(load_encoder(sys.argv[1]).state_dict(), sys.argv[2])
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code, str(path), str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    here = load_encoder(path).state_dict()
    there = load_file(out)
    assert set(here) == set(there)
    assert all(torch.equal(here[k], there[k]) for k in here)


def test_encoder_state_dict_converts_microsoft_layout(gfm_file) -> None:
    path, _, _ = gfm_file
    tensors, _ = read_state_dict(path)
    sd = encoder_state_dict(tensors)
    assert set(sd) == set(build_encoder(TINY).state_dict())
    assert torch.equal(sd["layers.1.downsample.reduction.weight"],
                       tensors["encoder.layers.0.downsample.reduction.weight"])
    assert "layers.0.downsample.norm.weight" not in sd


def test_gfm_in_chans_adaptation(gfm_file) -> None:
    path, _, _ = gfm_file
    enc = load_encoder(path, in_chans=4)
    assert enc.config.in_chans == 4
    assert tuple(enc.patch_embed.proj.weight.shape) == (32, 4, 4, 4)
    assert [o.shape[1] for o in run(enc, image(192, chans=4))] == [32, 64, 128, 256]


# ---------------------------------------------------------------- Microsoft / timm Swin


def test_22k_and_timm_layouts_agree(swin22k_file, tmp_path) -> None:
    path, ref = swin22k_file
    enc = load_encoder(path)
    assert (enc.config.window_size, enc.config.img_size) == (7, 224)
    x = image(224)
    assert_close(run(enc, x), ref(x))

    timm_sd = dict(enc.state_dict())
    timm_sd["head.fc.weight"] = torch.randn(5, 256)
    timm_sd["head.fc.bias"] = torch.zeros(5)
    files = [tmp_path / "timm.pth", tmp_path / "timm.safetensors", tmp_path / "legacy.bin"]
    torch.save(timm_sd, files[0])
    save_file(timm_sd, files[1])
    torch.save({"state_dict": timm_sd}, files[2], _use_new_zipfile_serialization=False)
    for file in files:
        other = load_encoder(file)
        assert other.config == enc.config, file
        theirs = other.state_dict()
        assert all(torch.equal(v, theirs[k]) for k, v in enc.state_dict().items()), file


def test_window_change_interpolates_tables(swin22k_file) -> None:
    path, _ = swin22k_file
    enc = load_encoder(path, img_size=192, window_size=6)
    assert (enc.config.window_size, enc.config.img_size) == (6, 192)
    tables = {k: v for k, v in enc.state_dict().items() if k.endswith("bias_table")}
    assert tables and all(v.shape[0] == 11 * 11 for v in tables.values())
    source, _ = read_state_dict(path)
    key = "layers.2.blocks.1.attn.relative_position_bias_table"
    assert torch.allclose(tables[key], resize_bias_table(source[key], 6))
    outs = run(enc, image(192))
    assert [o.shape[-1] for o in outs] == [48, 24, 12, 6]
    assert all(torch.isfinite(o).all() for o in outs)


def test_resize_bias_table() -> None:
    table = torch.randn(13 * 13, 4)
    assert resize_bias_table(table, 7) is table
    assert tuple(resize_bias_table(table, 12).shape) == (23 * 23, 4)
    flat = torch.full((13 * 13, 2), 0.5)
    assert torch.allclose(resize_bias_table(flat, 6), torch.full((121, 2), 0.5))


# ---------------------------------------------------------------- our own files


def test_own_file_round_trip_is_exact(tmp_path) -> None:
    enc = randomize_(build_encoder("tiny"), seed=9)
    path = save_encoder(enc, tmp_path / "enc.safetensors", extra_metadata={"epoch": 3})
    assert not list(tmp_path.glob(".*partial"))
    _, meta = read_state_dict(path)
    assert meta["epoch"] == "3"
    loaded = load_encoder(path)
    assert loaded.config == enc.config and loaded.config.name == "tiny"
    x = image(192)
    for a, b in zip(run(loaded, x), run(enc, x), strict=True):
        assert torch.equal(a, b)


def test_model_package_folder(tmp_path) -> None:
    """The fine-tuned package: `encoder.*` + `head.*` in model.safetensors, config in metadata."""
    enc = randomize_(build_encoder(TINY.with_input(256)), seed=4)
    state = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    state["head.classifier.weight"] = torch.randn(3, 256)
    save_file(state, tmp_path / "model.safetensors",
              metadata={"gfm_encoder_config": json.dumps(enc.config.to_json()),
                        "gfm_model_json": "{}"})
    loaded = load_encoder(tmp_path)
    assert loaded.config == enc.config
    mine = loaded.state_dict()
    assert all(torch.equal(v, mine[k]) for k, v in enc.state_dict().items())


# ---------------------------------------------------------------- bad input

EXECUTED: list[str] = []


def _side_effect() -> None:
    EXECUTED.append("ran")


class Opaque:
    """Pickles as a call to `_side_effect`: loading it must neither run it nor fall back."""

    def __reduce__(self):
        return (_side_effect, ())


def _expect_input_error(path: Path, **kwargs) -> InputError:
    with pytest.raises(InputError) as caught:
        load_encoder(path, **kwargs)
    assert path.name in str(caught.value)
    return caught.value


def test_bad_inputs(tmp_path, swin22k_file) -> None:
    _expect_input_error(tmp_path / "missing.pth")

    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    _expect_input_error(text)
    fake = tmp_path / "notes.safetensors"
    fake.write_text("these are not weights either\n")
    _expect_input_error(fake)

    empty_dir = tmp_path / "package"
    empty_dir.mkdir()
    _expect_input_error(empty_dir)

    resnet = tmp_path / "resnet50.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "bn1.weight": torch.ones(64),
                "fc.weight": torch.zeros(1000, 2048)}, resnet)
    assert "no Swin" in str(_expect_input_error(resnet))

    pickled = tmp_path / "opaque.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Opaque()}, pickled)
    error = _expect_input_error(pickled)
    assert "_side_effect" in str(error) and not EXECUTED

    truncated = tmp_path / "truncated.pth"
    source, _ = swin22k_file
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    _expect_input_error(truncated)


def test_incomplete_or_mismatched_swin(tmp_path, swin22k_file) -> None:
    source, _ = swin22k_file
    sd, _ = read_state_dict(source)
    del sd["layers.1.blocks.1.mlp.fc1.weight"]
    partial = tmp_path / "partial.pth"
    torch.save(sd, partial)
    assert "missing" in str(_expect_input_error(partial))
    assert load_encoder(partial, strict=False).config.window_size == 7

    enc = build_encoder("tiny")
    lying = tmp_path / "lying.safetensors"
    state = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    wider = replace(TINY, embed_dim=48)  # claims shapes the weights do not have
    save_file(state, lying, metadata={"gfm_encoder_config": json.dumps(wider.to_json())})
    _expect_input_error(lying)

    with pytest.raises(InputError, match="state dict"):
        load_state_dict_into(build_encoder("tiny"), {"patch_embed.proj.weight": torch.zeros(1)})


# ---------------------------------------------------------------- full size (slow)


@pytest.mark.slow
def test_full_size_gfm_checkpoint(tmp_path) -> None:
    """A Swin-B gfm.pth in exactly the official layout loads student and teacher."""
    keys = official_keys()
    if keys is None:
        pytest.skip("gfm_pth_keys.json not available (set GFM_REFERENCE_DIR)")
    path = tmp_path / "gfm.pth"
    student, teacher = write_gfm_checkpoint(path, CONFIGS["base"], seed=11)
    tensors, _ = read_state_dict(path)
    layout = {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in tensors.items()}
    assert list(layout) == list(keys) and layout == keys
    del tensors

    enc = load_encoder(path)
    assert replace(enc.config, name="base") == CONFIGS["base"]
    x = image(192)
    assert_close(run(enc, x), student(x))
    del enc, student

    enc = load_encoder(path, prefix="teacher.")
    assert (enc.config.window_size, enc.config.img_size) == (7, 224)
    x = image(224)
    assert_close(run(enc, x), teacher(x))

    resized = load_encoder(path, prefix="teacher.", img_size=192, window_size=6)
    assert all(torch.isfinite(o).all() for o in run(resized, image(192)))
