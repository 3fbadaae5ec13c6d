"""Continual pretraining on a real (small) GeoPile: exact resume, teacher, errors, torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gfm_backend.data.synthetic import make_scene, write_scene
from gfm_backend.errors import Cancelled, GfmError, InputError
from gfm_backend.models import CONFIGS, build_encoder, load_encoder, save_encoder
from gfm_backend.models.pretrainer import teacher_config
from gfm_backend.progress import Progress
from gfm_backend.tasks.geopile import GeopileParams, build_geopile
from gfm_backend.tasks.pretrain import PretrainParams, export_encoder, pretrain

QUICK = {"config": "tiny", "batch": 2, "device": "cpu", "log_every": 1}


@pytest.fixture(scope="module")
def pile(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pile")
    (root / "src").mkdir()
    write_scene(make_scene(768, seed=3), root / "src" / "scene.tif")  # 16 chips
    build_geopile(GeopileParams(root / "src", root / "pile"))
    return root / "pile"


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    torch.manual_seed(1)
    return save_encoder(build_encoder(teacher_config(CONFIGS["tiny"])), path)


def weights(run: Path) -> dict[str, torch.Tensor]:
    latest = (run / "checkpoints" / "latest").read_text().strip()
    return load_file(str(run / "checkpoints" / latest / "model.safetensors"))


def test_resume_continues_exactly(pile, tmp_path):
    straight = tmp_path / "straight"
    pretrain(PretrainParams(pile, straight, teacher="none", max_steps=6, checkpoint_every=3, **QUICK))

    stopped = tmp_path / "stopped"
    steps = []

    def report(fraction, message):
        steps.append(message)

    progress = Progress(report=report, is_cancelled=lambda: len(steps) >= 3)
    with pytest.raises(Cancelled):
        pretrain(PretrainParams(pile, stopped, teacher="none", max_steps=6, checkpoint_every=100,
                                **QUICK), progress)
    assert (stopped / "checkpoints" / "latest").read_text().strip() == "step-00000003"
    with pytest.raises(InputError, match="--resume"):
        pretrain(PretrainParams(pile, stopped, teacher="none", max_steps=6, **QUICK))
    pretrain(PretrainParams(pile, stopped, teacher="none", max_steps=6, resume=True, **QUICK))
    a, b = weights(straight), weights(stopped)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    rows = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "loss_mim", "loss_distill", "lr", "images_per_s"} <= set(rows[0])
    assert (straight / "loss.png").exists()


def test_teacher_distillation_and_encoder_export(pile, tiny_teacher, tmp_path):
    run = tmp_path / "run"
    result = pretrain(PretrainParams(pile, run, teacher=str(tiny_teacher), max_steps=2, **QUICK))
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_distill"] != 0 and -1 <= r["loss_distill"] <= 1 for r in rows)  # -cos
    assert all(abs(r["loss"] - r["loss_mim"] - r["loss_distill"]) < 1e-5 for r in rows)
    enc = load_encoder(result["encoder"])
    assert enc.config.embed_dim == CONFIGS["tiny"].embed_dim
    exported = export_encoder(run, tmp_path / "student.safetensors")
    again = load_encoder(exported)
    for (k, v), (k2, v2) in zip(enc.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert load_encoder(run / "checkpoints" / latest / "model.safetensors").config == enc.config


def test_cuda_settings_run_on_cpu(pile, tmp_path):
    """The CUDA path's bf16 autocast and fused attention, exercised on the CPU: finite
    losses, fp32 weights."""
    run = tmp_path / "bf16"
    pretrain(PretrainParams(pile, run, teacher="none", max_steps=2, bf16=True, attention="sdpa",
                            **QUICK))
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < r["loss"] < 10 for r in rows)
    assert json.loads((run / "run.json").read_text())["params"]["attention"] == "sdpa"
    assert all(v.dtype == torch.float32 for v in weights(run).values() if v.is_floating_point())


def test_bad_inputs(pile, tmp_path):
    with pytest.raises(InputError, match="nowhere"):
        pretrain(PretrainParams(tmp_path / "nowhere", tmp_path / "r", teacher="none", **QUICK))
    with pytest.raises(GfmError, match="--teacher"):
        pretrain(PretrainParams(pile, tmp_path / "r", **QUICK))
    with pytest.raises(InputError, match="lower --batch"):
        pretrain(PretrainParams(pile, tmp_path / "r", teacher="none", config="tiny", batch=100000,
                                device="cpu"))
    wrong = save_encoder(build_encoder(CONFIGS["tiny"].with_input(224, 7).__class__(
        48, (2, 2, 2, 2), (3, 6, 12, 24), 4, 7, 3, 224, "other")), tmp_path / "wrong.safetensors")
    with pytest.raises(InputError, match="wrong.safetensors"):
        pretrain(PretrainParams(pile, tmp_path / "r2", teacher=str(wrong), max_steps=1, **QUICK))
    assert not (tmp_path / "r2" / "checkpoints").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_read_disjoint_chips_and_agree(pile, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "gfm_backend.cli", "--quiet", "pretrain", str(pile), "--out", str(run),
           "--config", "tiny", "--teacher", "none", "--batch", "2", "--max-steps", "3",
           "--device", "cpu", "--record-chips"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((run / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    a, b = (set(r["chips"]) for r in ranks)
    assert len(a) == len(b) == 6 and not a & b
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    meta = json.loads((run / "run.json").read_text())
    assert meta["world"] == 2
