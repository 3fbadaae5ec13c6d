"""Fine-tune and classify on the real samples (New Brunswick orthophotos with BakerLake
polygons, SpaceNet Las Vegas buildings); skipped where GFM_REAL_DATA is not set."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.crs import CRS

from gfm_backend.data.chips import RasterLabels, cut_chip
from gfm_backend.data.labels import read_labels, reproject_geoms
from gfm_backend.data.raster import Normalizer
from gfm_backend.package import ModelSpec, default_classes, read_spec
from gfm_backend.tasks.classify import ClassifyParams, classify
from gfm_backend.tasks.finetune import FinetuneParams, finetune

QUICK = {"config": "tiny", "device": "cpu", "epochs": 2, "chips": 16, "batch_size": 4}
NB = ("23322E759967N_clipped_1m_1of2.tif", "23322E759967N_clipped_1m_2of2.tif")


def test_bakerlake_text_classes_two_rasters(real_data, tmp_path):
    rasters = [real_data / n for n in NB]
    out = tmp_path / "model"
    report = finetune(FinetuneParams(rasters, real_data / "BakerLake_2017_clipped.gpkg",
                                     "Niveau_2", out, **QUICK))
    spec = read_spec(out)
    assert set(spec.class_names) <= {"Building", "Vegetation", "Road", "Hydro", "Train"}
    assert len(spec.class_names) >= 3
    assert spec.gsd_m == pytest.approx(0.5)
    assert report["split"]["val_polygons"] >= 1

    result = classify(ClassifyParams(rasters[0], out, tmp_path / "classified", device="cpu"))
    with rasterio.open(rasters[0]) as src, rasterio.open(tmp_path / "classified" / "classes.tif") as ds:
        assert ds.crs == src.crs == CRS.from_epsg(2953)
        assert ds.transform == src.transform and ds.shape == src.shape
    info = pyogrio.read_info(tmp_path / "classified" / "polygons.gpkg")
    assert CRS.from_user_input(info["crs"]) == CRS.from_epsg(2953)
    assert result["polygon_count"] == info["features"] > 0


def test_numeric_field_names_classes(real_data, tmp_path):
    finetune(FinetuneParams([real_data / NB[0]], real_data / "BakerLake_2017_clipped.gpkg",
                            "Cinqclasses", tmp_path / "m", onnx=False, **QUICK))
    names = read_spec(tmp_path / "m").class_names
    assert all(n.isdigit() for n in names) and names == sorted(names, key=int)


def test_labels_reprojected_not_assumed(real_data, tmp_path):
    """The same polygons in WGS 84 burn the same pixels as in the raster's own CRS."""
    src_labels = read_labels(real_data / "BakerLake_2017_clipped.gpkg", "Niveau_2")
    wgs = reproject_geoms(src_labels.geoms, src_labels.crs, CRS.from_epsg(4326))
    path = tmp_path / "wgs84.geojson"
    pyogrio.raw.write(str(path), shapely.to_wkb(wgs),
                      [np.array([str(v) for v in src_labels.values], dtype=object)],
                      ["Niveau_2"], driver="GeoJSON", geometry_type="MultiPolygon",
                      crs="EPSG:4326")
    reread = read_labels(path, "Niveau_2")
    assert reread.crs == CRS.from_epsg(4326)
    names = sorted(set(map(str, src_labels.values)))
    spec = ModelSpec(task="segmentation", classes=default_classes(names), encoder={})
    with rasterio.open(real_data / NB[0]) as ds:
        win = rasterio.windows.Window(0, 0, 192, 192)
        labels = []
        for ls in (src_labels, reread):
            g = reproject_geoms(ls.geoms, ls.crs, ds.crs)
            ids = np.array([names.index(str(v)) for v in ls.values])
            rl = RasterLabels(g, ids, np.zeros(len(g), bool), np.zeros(len(g), int))
            labels.append(cut_chip(ds, [1, 2, 3], Normalizer.from_spec(spec), rl, win, 192,
                                   False, False)[1])
    labelled = labels[0] != 255
    assert labelled.sum() > 1000
    assert (labels[0] == labels[1]).mean() > 0.99


def test_spacenet_footprints_without_field(real_data, tmp_path):
    raster = real_data / "SpaceNet_AOI_2_Las_Vegas-056155973080_01_P001-WV03-RGB.tif"
    labels = real_data / "SpaceNet_AOI_2_Las_Vegas-056155973080_01_P001-WV03.gpkg"
    out = tmp_path / "m"
    finetune(FinetuneParams([raster], labels, None, out, unlabeled="background", onnx=False,
                            **QUICK))
    spec = read_spec(out)
    assert spec.class_names[0] == "background" and len(spec.class_names) == 2
    report = json.loads((out / "report.json").read_text())
    assert report["class_field"] is None
