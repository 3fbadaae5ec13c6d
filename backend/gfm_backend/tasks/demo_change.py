"""`gfm demo --task change`: change detection on a synthetic pair, end to end, no download.

The pair is synthetic (`data.synthetic_change`): new built-up patches on fields, cleared
forest, and a global brightness and contrast shift that is not change. The patches in the
left part are "drawn" as change polygons; a tiny change model is fine-tuned on them,
changes are detected over the whole pair and scored on the right part, never drawn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from ..data.synthetic import write_polygons
from ..data.synthetic_change import CHANGE_CLASSES, make_change_pair, patch_polygons, write_pair
from ..package import default_classes
from ..progress import Progress, silent
from .change_detect import detect_change
from .change_finetune import finetune_change
from .change_scores import change_scores
from .metrics import confusion
from .params import DetectChangeParams, FinetuneChangeParams

DRAWN_PART = 0.6  # patches wholly left of this fraction of the width are drawn


def demo_change(out: Path, device: str = "auto", size: int = 768, epochs: int = 12,
                encoder_epochs: int = 4, progress: Progress | None = None) -> dict[str, Any]:
    progress = progress or silent()
    out = Path(out)
    progress(0.0, "making the synthetic pair")
    pair = make_change_pair(size, count=24, patch_px=size // 14)
    before, after = write_pair(pair, out)
    cut = int(size * DRAWN_PART)
    drawn = [i for i, (_, _, c, _, w) in enumerate(pair.patches) if c + w <= cut]
    geoms, kinds = patch_polygons(pair, drawn)
    labels = write_polygons(out / "changes.gpkg", geoms, kinds, pair.before.crs)
    ft = finetune_change(FinetuneChangeParams(
        before=before, after=after, labels=labels, class_field="class", out=out / "change-model",
        config="tiny", device=device, epochs=epochs, encoder_epochs=encoder_epochs, chips=96,
        batch_size=8, patience=6, name="demo-change-tiny", overwrite=True), progress.span(0.02, 0.85))
    detected = detect_change(DetectChangeParams(before=before, after=after, model=out / "change-model",
                                                out=out / "changes", device=device, min_area=4.0,
                                                overwrite=True), progress.span(0.85, 0.98))
    with rasterio.open(out / "changes" / "change.tif") as ds:
        pred = ds.read(1)
    unseen = np.full_like(pair.truth, 255)
    unseen[:, cut:] = pair.truth[:, cut:]
    names = list(CHANGE_CLASSES)
    report = {
        "note": "synthetic pair made by gfm demo: new built-up patches, cleared forest and a "
                "global brightness shift (not change); not real imagery",
        "before": str(before), "after": str(after), "labels": str(labels),
        "model": str(out / "change-model"), "changes": str(out / "changes"),
        "drawn_patches": len(drawn), "patches": len(pair.patches),
        "scores_on_unseen_right_part": change_scores(confusion(pred, unseen, len(names)), names),
        "finetune_time_s": ft["time_s"], "detect_time_s": detected["timings_s"]["total"],
    }
    _preview(pair, pred, cut, out / "change_preview.png")
    (out / "demo_change_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    progress(1.0, "done")
    return report


def _preview(pair: Any, pred: np.ndarray, cut: int, path: Path) -> None:
    """Before, after, prediction and truth side by side; the drawn part left of the line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    classes = default_classes(list(CHANGE_CLASSES), background=True)
    lut = np.zeros((256, 3), dtype=np.uint8)
    for c in classes:
        lut[c.id] = c.rgb
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.8), dpi=80)
    panels = ((np.moveaxis(pair.before.image, 0, -1), "before"),
              (np.moveaxis(pair.after.image, 0, -1), "after (brighter: not change)"),
              (lut[pred], "prediction (gfm detect-change)"), (lut[pair.truth], "truth"))
    for ax, (img, title) in zip(axes, panels, strict=True):
        ax.imshow(img)
        ax.axvline(cut, color="yellow", linewidth=1)
        ax.set_title(title)
        ax.set_axis_off()
    fig.legend(handles=[Patch(color=c.color, label=c.name) for c in classes],
               loc="lower center", ncol=len(classes))
    fig.text(0.01, 0.01, "synthetic pair; polygons drawn left of the yellow line", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    plt.close(fig)
