"""Pretraining run folders: atomic checkpoints that resume exactly.

RUN_DIR/checkpoints/step-NNNNNNNN/ holds `model.safetensors` (the whole GfmPretrainer,
readable by `load_pretrainer`, and by `load_encoder` for the student) and `state.pt`
(optimiser, schedule, data position, every RNG). A checkpoint folder is written under a
temporary name and renamed, then `checkpoints/latest` is switched to it; the previous
one is kept until the new one is complete, so a crash loses at most one interval.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_dir, write_text_atomic
from ..errors import InputError
from ..models import save_pretrainer

CHECKPOINTS = "checkpoints"
LATEST = "latest"
KEEP = 2


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, model, state: dict[str, Any],
                    metadata: dict[str, Any] | None = None) -> Path:
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    with atomic_dir(final) as tmp:
        save_pretrainer(model, tmp / "model.safetensors", extra_metadata=metadata)
        torch.save(state, tmp / "state.pt")
    write_text_atomic(root / LATEST, final.name)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / CHECKPOINTS / LATEST
    if not pointer.exists():
        return None
    path = pointer.parent / pointer.read_text(encoding="utf-8").strip()
    return path if (path / "state.pt").exists() else None


def load_state(checkpoint: Path) -> dict[str, Any]:
    try:
        # our own file: optimiser state and numpy RNG tuples need full unpickling
        return torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:
        raise InputError(checkpoint / "state.pt", f"unreadable training state ({exc})") from exc
