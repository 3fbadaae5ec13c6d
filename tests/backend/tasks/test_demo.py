"""The demo's whole loop at a reduced size: scene, drawn polygons, model, classes, preview."""

from __future__ import annotations

import json

from gfm_backend.tasks.demo import demo


def test_demo_small(tmp_path):
    report = demo(tmp_path, device="cpu", size=384, epochs=2, encoder_epochs=1, with_qgis=False)
    for name in ("scene.tif", "labels.gpkg", "preview.png", "demo_report.json",
                 "model/model.json", "model/model.onnx", "classified/classes.tif",
                 "classified/polygons.gpkg"):
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "demo_report.json").read_text())
    assert "synthetic" in saved["note"]
    acc = report["accuracy_on_pixels_not_drawn"]["overall_accuracy"]
    assert 0.0 <= acc <= 1.0
    assert report["training_polygons"] == 16


def test_change_demo_small(tmp_path):
    from gfm_backend.tasks.demo_change import demo_change

    report = demo_change(tmp_path, device="cpu", size=384, epochs=2, encoder_epochs=0)
    for name in ("before.tif", "after.tif", "changes.gpkg", "change_preview.png",
                 "demo_change_report.json", "change-model/model.json", "changes/change.tif",
                 "changes/polygons.gpkg"):
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "demo_change_report.json").read_text())
    assert "synthetic" in saved["note"] and "brightness" in saved["note"]
    assert set(report["scores_on_unseen_right_part"]["change"]) == {"precision", "recall", "f1", "iou"}
    assert 0 < report["drawn_patches"] < report["patches"]
