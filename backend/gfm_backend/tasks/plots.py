"""PNG figures for the training report: loss/mIoU curve and confusion matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def training_curve(history: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    miou = [h.get("val_miou") for h in history]
    ax2.plot(epochs, [np.nan if m is None else m for m in miou], color="tab:orange",
             label="validation mIoU")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("mIoU")
    for i, h in enumerate(history):
        if i and h["stage"] != history[i - 1]["stage"]:
            ax.axvline(h["epoch"] - 0.5, color="grey", linestyle=":")
    fig.legend(loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def confusion_matrix(cm: np.ndarray, names: list[str], path: Path) -> None:
    n = len(names)
    side = max(3.5, 1.2 + 0.6 * n)
    fig, ax = plt.subplots(figsize=(side, side), dpi=100)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.savefig(path, bbox_inches="tight")  # long class names get the room they need
    plt.close(fig)
