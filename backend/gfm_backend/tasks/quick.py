"""Quick fine-tune: no network training. The frozen encoder's features at the labelled
pixels (stride 4, every stage resized and concatenated; a chip's mean for scenes) feed a
logistic regression, whose weights become the package's `ProbeHead`.

Logistic regression rather than a random forest: it is a linear layer, so the fitted
classifier *is* the network's last layer: one ONNX file that classify runs unchanged at
the encoder's speed, and calibrated probabilities for tile blending and confidence. A
forest on embeddings would need its own runtime beside the network and gives no
blendable per-pixel probabilities at the stride-4 grid for free.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..data.chips import IGNORE
from ..errors import GfmError
from ..models.heads import ProbeHead, stage_features
from ..models.network import Network
from ..progress import Progress
from .metrics import confusion, summarize

MAX_PER_CLASS = 20_000  # samples per class the regression sees: seconds to fit, enough
C_GRID = (0.01, 0.1, 1.0)  # inverse regularisation strengths tried, chosen on validation
STRIDE = 4  # the first Swin stage's grid, where ProbeHead classifies


@dataclass
class Samples:
    features: np.ndarray  # (n, channels) float32
    labels: np.ndarray  # (n,) int64


def fit_probe(net: Network, device: torch.device, chips: tuple[np.ndarray, np.ndarray],
              val: tuple[np.ndarray, np.ndarray], names: list[str], batch_size: int,
              seed: int, progress: Progress) -> list[dict]:
    """Fit the probe on `chips` (images, labels), choose C on `val`, set the head's
    weights; returns the history the report and the training curve show (one row per C)."""
    head = net.head
    if not isinstance(head, ProbeHead):
        raise TypeError("the quick fine-tune needs a model whose head is a ProbeHead")
    rng = np.random.default_rng(seed)
    progress(0.1, "quick: features of the training chips")
    train = balance(features_at_labels(net, device, *chips, head.pooled, batch_size, rng,
                                       progress), rng)
    progress(0.6, "quick: features of the validation chips")
    held = features_at_labels(net, device, *val, head.pooled, batch_size, rng, progress)
    if len(np.unique(train.labels)) < 2:
        raise GfmError("the training chips hold labelled pixels of one class only; draw "
                       "polygons of at least two classes (or use --unlabeled background)")
    if not len(held.labels):
        held = train
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train.features)
    x_train, x_val = scaler.transform(train.features), scaler.transform(held.features)
    best: tuple[float, object] | None = None
    history: list[dict] = []
    for i, c in enumerate(C_GRID):
        progress.check()
        t0 = time.perf_counter()
        model = LogisticRegression(C=c, max_iter=500, class_weight="balanced")
        model.fit(x_train, train.labels)
        cm = confusion(model.predict(x_val), held.labels, len(names))
        score = summarize(cm, names)["mean_iou"] or 0.0
        history.append({"epoch": i + 1, "stage": "quick", "C": c, "val_miou": score,
                        "train_loss": _log_loss(model, x_train, train.labels),
                        "fit_s": round(time.perf_counter() - t0, 2)})
        progress(0.8 + 0.15 * (i + 1) / len(C_GRID), f"quick: C={c}, val mIoU {score:.3f}")
        if best is None or score > best[0] + 1e-4:
            best = (score, model)
    assert best is not None
    weight, bias = _full_linear(best[1], len(names))
    scale = scaler.scale_.astype(np.float64)
    weight = weight / scale[None, :]
    bias = bias - weight @ scaler.mean_
    head.set_linear(torch.from_numpy(weight).float(), torch.from_numpy(bias).float())
    return history


@torch.no_grad()
def features_at_labels(net: Network, device: torch.device, images: np.ndarray,
                       labels: np.ndarray, pooled: bool, batch_size: int,
                       rng: np.random.Generator, progress: Progress) -> Samples:
    """The probe's input at labelled points: each chip's stride-4 cells whose centre
    pixel is labelled (a few per class and chip, so memory stays small), or each chip."""
    net.eval()
    per_chip = max(64, 4 * MAX_PER_CLASS // max(len(images), 1))
    feats, ys = [], []
    for b in range(0, len(images), batch_size):
        progress.check()
        xb = torch.from_numpy(images[b : b + batch_size]).to(device)
        f = stage_features(net.encoder(xb), pooled).float().cpu().numpy()
        yb = labels[b : b + batch_size]
        if pooled:
            keep = yb != IGNORE
            feats.append(f[keep])
            ys.append(yb[keep])
            continue
        centre = yb[:, STRIDE // 2 :: STRIDE, STRIDE // 2 :: STRIDE]
        for chip_f, chip_y in zip(f, centre, strict=True):
            flat_f, flat_y = chip_f.reshape(chip_f.shape[0], -1).T, chip_y.ravel()
            for cls in np.unique(flat_y[flat_y != IGNORE]):
                idx = np.nonzero(flat_y == cls)[0]
                idx = rng.choice(idx, min(len(idx), per_chip), replace=False)
                feats.append(flat_f[idx])
                ys.append(flat_y[idx])
    if not feats:
        return Samples(np.zeros((0, 0), np.float32), np.zeros(0, np.int64))
    return Samples(np.concatenate(feats).astype(np.float32), np.concatenate(ys).astype(np.int64))


def balance(samples: Samples, rng: np.random.Generator) -> Samples:
    """At most MAX_PER_CLASS samples of each class."""
    keep = []
    for cls in np.unique(samples.labels):
        idx = np.nonzero(samples.labels == cls)[0]
        keep.append(rng.choice(idx, min(len(idx), MAX_PER_CLASS), replace=False))
    idx = np.sort(np.concatenate(keep))
    return Samples(samples.features[idx], samples.labels[idx])


def _full_linear(model, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The fitted model as (weight (classes, features), bias) over every class of the
    package: a class never drawn gets a bias no pixel overcomes."""
    coef, intercept = np.asarray(model.coef_, np.float64), np.asarray(model.intercept_, np.float64)
    if len(model.classes_) == 2:  # sklearn keeps one row: logit of the second class
        coef = np.stack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    weight = np.zeros((num_classes, coef.shape[1]))
    bias = np.full(num_classes, -30.0)
    weight[model.classes_], bias[model.classes_] = coef, intercept
    return weight, bias


def _log_loss(model, x: np.ndarray, y: np.ndarray) -> float:
    probs = model.predict_proba(x)
    col = np.searchsorted(model.classes_, y)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), col], 1e-12, None))))
