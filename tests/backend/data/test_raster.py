"""Raster reading helpers: normalisation, windows past the edge, pixel sizes."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from gfm_backend.data.raster import Normalizer, pixel_size_m, read_window, source_scale
from gfm_backend.package import ModelSpec


def spec(**kw) -> ModelSpec:
    return ModelSpec(task="segmentation", classes=[{"id": 0, "name": "a", "color": "#000000"}],
                     encoder={}, **kw)


def test_normalizer_matches_the_formula():
    s = spec(scale_offset=[10.0, 0.0, 0.0], scale=[1000.0, 255.0, 255.0])
    raw = np.random.default_rng(0).integers(0, 2000, (3, 6, 6)).astype(np.uint16)
    col = lambda v: np.asarray(v, dtype=np.float64).reshape(3, 1, 1)  # noqa: E731
    ref = np.clip((raw - col(s.scale_offset)) / col(s.scale), 0, 1)
    ref = (ref - col(s.mean)) / col(s.std)
    np.testing.assert_allclose(Normalizer.from_spec(s)(raw), ref, atol=1e-5)


def test_window_past_edge_is_padded_and_invalid(tmp_path):
    path = tmp_path / "r.tif"
    with rasterio.open(path, "w", driver="GTiff", width=10, height=10, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(0, 10, 1, 1), nodata=0) as dst:
        data = np.full((3, 10, 10), 50, np.uint8)
        data[:, 0, 0] = 0
        dst.write(data)
    with rasterio.open(path) as ds:
        raw, valid = read_window(ds, [1, 2, 3], Window(-2, -2, 8, 8))
        assert raw.shape == (3, 8, 8) and valid.shape == (8, 8)
        assert not valid[:2].any() and not valid[:, :2].any()
        assert not valid[2, 2]  # the nodata pixel
        assert valid[3:, 3:].all() and (raw[:, 3:, 3:] == 50).all()
        raw, valid = read_window(ds, [1, 2, 3], Window(0, 0, 10, 10), out_size=5)
        assert raw.shape == (3, 5, 5) and valid.shape == (10, 10)


def test_pixel_size_projected_geographic_and_scale(tmp_path):
    def make(name, crs, res):
        p = tmp_path / name
        with rasterio.open(p, "w", driver="GTiff", width=4, height=4, count=3, dtype="uint8",
                           crs=crs, transform=from_origin(10, 50, res, res)) as dst:
            dst.write(np.zeros((3, 4, 4), np.uint8))
        return rasterio.open(p)

    with make("utm.tif", "EPSG:32633", 0.5) as ds:
        assert pixel_size_m(ds) == pytest.approx(0.5)
        assert source_scale(ds, spec(gsd_m=0.6)) == (1.0, None)
        ratio, warning = source_scale(ds, spec(gsd_m=2.0))
        assert ratio == pytest.approx(4.0) and "resampled" in warning
    with make("wgs.tif", "EPSG:4326", 1e-5) as ds:
        assert 0.5 < pixel_size_m(ds) < 1.2
    with make("ft.tif", "EPSG:2272", 1.0) as ds:  # US survey feet
        assert pixel_size_m(ds) == pytest.approx(0.3048, rel=1e-3)


def test_web_mercator_pixels_are_measured_on_the_ground(tmp_path):
    """A 1-unit EPSG:3857 pixel at 60 degrees north is 0.5 m on the ground (an XYZ basemap
    exported for a 0.5 m model must not be taken for 1 m imagery)."""
    p = tmp_path / "merc.tif"
    y60 = 8_399_737.89  # latitude 60 in Web Mercator
    with rasterio.open(p, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8",
                       crs="EPSG:3857", transform=from_origin(1_000_000, y60 + 2, 1.0, 1.0)) as dst:
        dst.write(np.zeros((1, 4, 4), np.uint8))
    with rasterio.open(p) as ds:
        assert pixel_size_m(ds) == pytest.approx(0.5, rel=2e-3)
        assert source_scale(ds, spec(gsd_m=0.5)) == (1.0, None)


def test_non_finite_values_are_invalid_and_zeroed(tmp_path):
    path = tmp_path / "f.tif"
    data = np.ones((3, 8, 8), dtype=np.float32)
    data[0, 0, 0], data[1, 2, 3], data[2, 7, 7] = np.nan, np.inf, -np.inf
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=3, dtype="float32",
                       crs="EPSG:32633", transform=from_origin(0, 8, 1, 1)) as ds:
        ds.write(data)
    with rasterio.open(path) as ds:
        raw, valid = read_window(ds, [1, 2, 3], Window(0, 0, 8, 8))
    assert np.isfinite(raw).all()
    assert not valid[0, 0] and not valid[2, 3] and not valid[7, 7] and valid.sum() == 61


@pytest.mark.parametrize("field, value", [("scale", [0.0, 255.0, 255.0]), ("gsd_m", 0.0),
                                          ("bands", []), ("bands", ["1", "2", "3"]),
                                          ("std", [0.2, 0.2, float("nan")]), ("tile_size", 0)])
def test_model_descriptions_that_would_give_nonsense_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        spec(**{field: value})
