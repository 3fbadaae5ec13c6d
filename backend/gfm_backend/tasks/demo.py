"""`gfm demo`: the analyst's loop on a synthetic scene, end to end, with no download.

Makes a scene with known truth, "draws" a few polygons per class in its left part,
fine-tunes the tiny model on them, classifies the whole scene and scores the result on
the pixels it never trained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.features import geometry_mask

from ..data.synthetic import (
    SCENE_CLASSES,
    draw_training_polygons,
    make_scene,
    write_polygons,
    write_scene,
)
from ..package import default_classes
from ..progress import Progress, silent
from .classify import ClassifyParams, classify
from .finetune import FinetuneParams, finetune
from .metrics import confusion, summarize


def demo(out: Path, device: str = "auto", size: int = 768, epochs: int = 12,
         encoder_epochs: int = 6, with_qgis: bool = True,
         progress: Progress | None = None) -> dict[str, Any]:
    progress = progress or silent()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    progress(0.0, "making the synthetic scene")
    scene = make_scene(size)
    raster = write_scene(scene, out / "scene.tif")
    geoms, names = draw_training_polygons(scene, per_class=4, box_px=size // 16,
                                          max_col=int(size * 0.6))
    labels = write_polygons(out / "labels.gpkg", geoms, names, scene.crs)

    ft = finetune(
        FinetuneParams(
            rasters=[raster], labels=labels, class_field="class", out=out / "model",
            config="tiny", device=device, epochs=epochs, encoder_epochs=encoder_epochs,
            chips=64, batch_size=8, patience=4, name="demo-tiny", overwrite=True,
        ),
        progress.span(0.02, 0.8),
    )
    cl = classify(ClassifyParams(raster=raster, model=out / "model", out=out / "classified",
                                 device=device, min_area=4.0, overwrite=True),
                  progress.span(0.8, 0.97))

    with rasterio.open(out / "classified" / "classes.tif") as ds:
        pred = ds.read(1)
    # The model's class ids follow sorted names; map them back to the scene's ids.
    model_names = ft["classes"]
    to_scene = np.array([SCENE_CLASSES.index(n) for n in model_names] + [255] * (256 - len(model_names)),
                        dtype=np.uint8)
    pred_scene = to_scene[pred]
    drawn = ~geometry_mask(geoms, out_shape=pred.shape, transform=scene.transform)
    unseen = scene.truth.copy()
    unseen[drawn] = 255
    right = np.full_like(scene.truth, 255)
    right[:, int(size * 0.6):] = scene.truth[:, int(size * 0.6):]
    names_scene = list(SCENE_CLASSES)
    report = {
        "note": "synthetic scene made by gfm demo; not real imagery",
        "scene": str(raster), "labels": str(labels), "model": str(out / "model"),
        "classified": str(out / "classified"),
        "training_polygons": len(geoms),
        "accuracy_on_pixels_not_drawn": summarize(
            confusion(pred_scene, unseen, len(names_scene)), names_scene),
        "accuracy_on_unseen_right_part": summarize(
            confusion(pred_scene, right, len(names_scene)), names_scene),
        "finetune_time_s": ft["time_s"], "classify_time_s": cl["timings_s"]["total"],
    }
    _preview(scene.image, pred_scene, scene.truth, geoms, scene.transform, out / "preview.png")
    if with_qgis:
        report["qgis"] = _qgis_step(out, progress.span(0.97, 1.0))
    (out / "demo_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    progress(1.0, "done")
    return report


QGIS_PYTHON = "/usr/bin/python3"
QGIS_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "qgis_demo.py"


def _qgis_step(out: Path, progress: Progress) -> dict[str, Any]:
    """Where QGIS is installed, classify again through the plugin's own code, headless, and
    save demo.qgz and map.png (QGIS's Python runs the plugin; the backend stays separate)."""
    import subprocess
    import sys

    if not QGIS_SCRIPT.exists():
        return {"skipped": "the plugin sources are not next to this backend (not a checkout)"}
    probe = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True)
    if probe.returncode != 0:
        return {"skipped": f"QGIS's Python ({QGIS_PYTHON}) cannot import qgis"}
    progress(0.0, "classifying again through the QGIS plugin")
    proc = subprocess.run([QGIS_PYTHON, str(QGIS_SCRIPT), str(out), sys.executable],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return {"failed": proc.stderr.strip().splitlines()[-1:] or ["unknown error"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _preview(image: np.ndarray, pred: np.ndarray, truth: np.ndarray, geoms: list,
             transform: rasterio.Affine, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    classes = default_classes(list(SCENE_CLASSES))
    lut = np.zeros((256, 3), dtype=np.uint8)
    for c in classes:
        lut[c.id] = c.rgb
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.8), dpi=90)
    axes[0].imshow(np.moveaxis(image, 0, -1))
    inv = ~transform
    for g in geoms:
        xs, ys = g.exterior.xy
        cols, rows = zip(*[inv @ (x, y) for x, y in zip(xs, ys, strict=True)], strict=True)
        axes[0].plot(cols, rows, color="yellow", linewidth=1)
    axes[0].set_title("image + drawn training polygons")
    axes[1].imshow(lut[pred])
    axes[1].set_title("prediction (gfm classify)")
    axes[2].imshow(lut[truth])
    axes[2].set_title("truth")
    for ax in axes:
        ax.set_axis_off()
    fig.legend(handles=[Patch(color=c.color, label=c.name) for c in classes],  # "#rrggbb"
               loc="lower center", ncol=len(classes))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    plt.close(fig)
