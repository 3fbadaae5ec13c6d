"""Confusion-matrix metrics for segmentation and scene classification."""

from __future__ import annotations

import numpy as np


def confusion(pred: np.ndarray, truth: np.ndarray, num_classes: int, ignore: int = 255) -> np.ndarray:
    """Rows = truth, columns = prediction; `ignore` pixels are left out."""
    keep = truth != ignore
    idx = truth[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def summarize(cm: np.ndarray, names: list[str]) -> dict:
    """Per-class IoU and accuracy (recall), overall accuracy and mean IoU over present classes."""
    tp = np.diag(cm).astype(np.float64)
    truth = cm.sum(axis=1).astype(np.float64)
    pred = cm.sum(axis=0).astype(np.float64)
    union = truth + pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(truth > 0, tp / truth, np.nan)
    present = truth > 0
    total = cm.sum()

    def clean(x: float) -> float | None:
        return None if np.isnan(x) else float(x)

    return {
        "per_class": {
            n: {"iou": clean(iou[i]), "accuracy": clean(acc[i]), "pixels": int(truth[i])}
            for i, n in enumerate(names)
        },
        "overall_accuracy": float(tp.sum() / total) if total else None,
        "mean_iou": float(np.nanmean(iou[present])) if present.any() else None,
        "confusion_matrix": cm.astype(int).tolist(),
        "confusion_matrix_axes": "rows: truth, columns: prediction",
    }
