"""Change scores from a confusion matrix whose class 0 is "no change"."""

from __future__ import annotations

from typing import Any

import numpy as np


def _prf(tp: float, fp: float, fn: float) -> dict[str, float | None]:
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall else None)
    iou = tp / (tp + fp + fn) if tp + fp + fn else None
    return {"precision": precision, "recall": recall, "f1": f1, "iou": iou}


def change_scores(cm: np.ndarray, names: list[str]) -> dict[str, Any]:
    """`change`: any change against no change (the F1 change-detection papers report);
    `per_change_class`: precision, recall and F1 of each kind of change."""
    cm = np.asarray(cm, dtype=np.float64)
    any_change = _prf(cm[1:, 1:].sum(), cm[0, 1:].sum(), cm[1:, 0].sum())
    per_class = {}
    for i, name in enumerate(names[1:], start=1):
        tp = cm[i, i]
        per_class[name] = _prf(tp, cm[:, i].sum() - tp, cm[i, :].sum() - tp)
    return {"change": any_change, "per_change_class": per_class}
