"""Scene classification: tile-level labels, a class raster at tile resolution, a tile grid."""

from __future__ import annotations

import pyogrio
import rasterio

from gfm_backend.package import read_spec
from gfm_backend.tasks.classify import ClassifyParams, classify
from gfm_backend.tasks.finetune import FinetuneParams, finetune


def test_scene_model_classifies_tile_by_tile(tmp_path, scene_files):
    model = tmp_path / "scene-model"
    finetune(FinetuneParams([scene_files["raster"]], scene_files["labels"], "class", model,
                            task="scene_classification", config="tiny", device="cpu",
                            epochs=1, chips=12, batch_size=4))
    assert read_spec(model).task == "scene_classification"
    out = tmp_path / "out"
    for runtime in ("torch", "onnx"):
        report = classify(ClassifyParams(scene_files["raster"], model, out, runtime=runtime,
                                         device="cpu", overwrite=True))
        assert report["tiles"] == 4  # 256 px scene, 192 px tiles: a 2 x 2 grid
    with rasterio.open(scene_files["raster"]) as src, rasterio.open(out / "classes.tif") as ds:
        assert ds.crs == src.crs
        assert (ds.width, ds.height) == (2, 2)
        assert ds.transform.a == src.transform.a * 192
        assert (ds.transform.c, ds.transform.f) == (src.transform.c, src.transform.f)
        classes = ds.read(1)
    info = pyogrio.read_info(out / "polygons.gpkg")
    assert {"class_id", "class_name", "score", "area_m2"} <= set(info["fields"])
    _, _, _, fields = pyogrio.raw.read(out / "polygons.gpkg", columns=["class_id", "area_m2"])
    assert len(fields[0]) == int((classes != 255).sum())
    assert abs(fields[1][0] - (192 * 0.5) ** 2) < 1e-6
