"""Results rewritten as Cloud Optimized GeoTIFFs: overviews by mode for classes and by
average for scores, georeferencing, colour table and nodata kept, nothing left beside."""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.transform import from_origin

from gfm_backend.data.cog import to_cog

TRANSFORM = from_origin(500_000, 5_000_000, 0.5, 0.5)


def write(path, data, dtype, nodata, colormap=None):
    with rasterio.open(path, "w", driver="GTiff", dtype=dtype, count=1, width=data.shape[1],
                       height=data.shape[0], crs="EPSG:32633", transform=TRANSFORM,
                       nodata=nodata, tiled=True, blockxsize=256, blockysize=256) as ds:
        ds.write(data[None])
        if colormap:
            ds.write_colormap(1, colormap)


def test_classes_get_mode_overviews_and_keep_their_palette(tmp_path):
    classes = np.zeros((1024, 1024), np.uint8)
    classes[:, 512:] = 1
    classes[::2, ::2] = 2  # a quarter of the pixels: never the majority of a 2x2 block
    path = tmp_path / "classes.tif"
    write(path, classes, "uint8", 255, {0: (255, 0, 0, 255), 1: (0, 0, 255, 255), 2: (0, 255, 0, 255)})
    to_cog(path, "mode")
    with rasterio.open(path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.overviews(1) == [2, 4] and ds.crs == "EPSG:32633" and ds.transform == TRANSFORM
        assert ds.nodata == 255 and ds.colormap(1)[1] == (0, 0, 255, 255)
        assert ds.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"  # horizontal differences
        assert (ds.read(1) == classes).all()
        small = ds.read(1, out_shape=(256, 256))
    assert set(np.unique(small)) == {0, 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif"]


def test_scores_get_average_overviews(tmp_path):
    scores = np.tile(np.array([[0.0, 1.0]], np.float32), (1024, 512))
    path = tmp_path / "confidence.tif"
    write(path, scores, "float32", -1.0)
    to_cog(path, "average")
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == [2, 4]
        assert ds.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"  # floating point
        assert (ds.read(1) == scores).all()
        assert np.allclose(ds.read(1, out_shape=(512, 512)), 0.5)
