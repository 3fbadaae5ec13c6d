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
