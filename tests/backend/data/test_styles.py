"""Style helpers: colour table, GDAL category names, QML files (parsed, and loaded in QGIS)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from gfm_backend.data.styles import (
    colormap,
    write_category_names,
    write_confidence_qml,
    write_polygons_qml,
    write_raster_qml,
)
from gfm_backend.data.vectorize import vectorize_classes
from gfm_backend.package import ClassInfo, default_classes

CLASSES = [
    ClassInfo(0, "water", "#1f78b4"),
    ClassInfo(1, "forest & scrub", "#33a02c"),
    ClassInfo(3, "<urban>", "#e31a1c"),  # a gap at 2
]
QGIS_PYTHON = "/usr/bin/python3"


def write_classes_tif(path: Path, classes: list[ClassInfo]) -> Path:
    arr = np.zeros((20, 20), np.uint8)
    arr[:10] = 1
    arr[15:, 15:] = 3
    arr[0, 0] = 255
    with rasterio.open(path, "w", driver="GTiff", width=20, height=20, count=1, dtype="uint8",
                       nodata=255, crs="EPSG:32633",
                       transform=Affine(0.5, 0, 500_000, 0, -0.5, 5_000_000)) as ds:
        ds.write(arr, 1)
        ds.write_colormap(1, colormap(classes))
    return path


def test_colormap_has_class_colours_and_transparent_nodata() -> None:
    cmap = colormap(CLASSES)
    assert cmap[0] == (0x1F, 0x78, 0xB4, 255)
    assert cmap[3] == (0xE3, 0x1A, 0x1C, 255)
    assert cmap[255] == (0, 0, 0, 0)
    assert 2 not in cmap


def test_category_names_sidecar(tmp_path: Path) -> None:
    tif = write_classes_tif(tmp_path / "classes.tif", CLASSES)
    aux = Path(f"{tif}.aux.xml")
    aux.write_text('<PAMDataset><Metadata><MDI key="KEEP">me</MDI></Metadata></PAMDataset>')

    assert write_category_names(tif, CLASSES) == aux

    root = ET.parse(aux).getroot()
    band = root.find("PAMRasterBand[@band='1']")
    names = [c.text or "" for c in band.find("CategoryNames")]
    assert names == ["water", "forest & scrub", "", "<urban>"]
    assert root.find("Metadata/MDI[@key='KEEP']").text == "me"
    write_category_names(tif, CLASSES)  # rewriting replaces, never duplicates
    assert len(ET.parse(aux).getroot().findall(".//CategoryNames")) == 1
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="gdalinfo not installed")
def test_gdal_reads_category_names(tmp_path: Path) -> None:
    tif = write_classes_tif(tmp_path / "classes.tif", CLASSES)
    write_category_names(tif, CLASSES)
    info = json.loads(subprocess.run(["gdalinfo", "-json", str(tif)], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["bands"][0]["categories"] == ["water", "forest & scrub", "", "<urban>"]


def test_raster_qml_is_a_paletted_style(tmp_path: Path) -> None:
    qml = write_raster_qml(tmp_path / "classes.qml", CLASSES)
    root = ET.parse(qml).getroot()
    assert root.tag == "qgis"
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = [(e.get("value"), e.get("color"), e.get("label"), e.get("alpha"))
               for e in renderer.findall("colorPalette/paletteEntry")]
    assert entries == [("0", "#1f78b4", "water", "255"),
                       ("1", "#33a02c", "forest & scrub", "255"),
                       ("3", "#e31a1c", "<urban>", "255")]


def test_confidence_qml_is_a_0_to_1_ramp(tmp_path: Path) -> None:
    root = ET.parse(write_confidence_qml(tmp_path / "confidence.qml")).getroot()
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor"
    assert (renderer.get("classificationMin"), renderer.get("classificationMax")) == ("0", "1")
    shader = renderer.find("rastershader/colorrampshader")
    assert shader.get("colorRampType") == "INTERPOLATED"
    values = [float(i.get("value")) for i in shader.findall("item")]
    assert values[0] == 0.0 and values[-1] == 1.0 and values == sorted(values)
    assert shader.find("colorramp").get("type") == "gradient"


def test_polygons_qml_is_categorized_by_class(tmp_path: Path) -> None:
    root = ET.parse(write_polygons_qml(tmp_path / "polygons.qml", CLASSES)).getroot()
    renderer = root.find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "class_id"
    cats = [(c.get("value"), c.get("label"), c.get("symbol"))
            for c in renderer.findall("categories/category")]
    assert cats == [("0", "water", "0"), ("1", "forest & scrub", "1"), ("3", "<urban>", "2")]
    fill = renderer.find("symbols/symbol[@name='2']/layer[@class='SimpleFill']")
    props = {o.get("name"): o.get("value") for o in fill.findall("Option/Option")}
    assert props["color"].startswith("227,26,28,") and props["color"] != "227,26,28,255"
    assert props["outline_color"] == "227,26,28,255"


def _qgis_available() -> bool:
    if not os.path.exists(QGIS_PYTHON):
        return False
    probe = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True)
    return probe.returncode == 0


QGIS_SCRIPT = textwrap.dedent("""
    import json, sys
    from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer
    app = QgsApplication([], False)
    app.initQgis()
    folder = sys.argv[1]
    out = {}
    r = QgsRasterLayer(folder + "/classes.tif", "classes")  # classes.qml is its default style
    out["classes"] = [[c.value, c.color.name(), c.label] for c in r.renderer().classes()]
    c = QgsRasterLayer(folder + "/confidence.tif", "confidence")
    out["confidence"] = [c.renderer().type(), c.renderer().classificationMin(),
                         c.renderer().classificationMax()]
    v = QgsVectorLayer(folder + "/polygons.gpkg|layername=polygons", "polygons", "ogr")
    ren = v.renderer()
    out["polygons"] = [ren.type(), ren.classAttribute(), v.crs().authid(), v.featureCount(),
                       [[str(k.value()), k.label(), k.symbol().color().name()]
                        for k in ren.categories()]]
    print("RESULT" + json.dumps(out))
    app.exitQgis()
""")


@pytest.mark.qgis
@pytest.mark.skipif(not _qgis_available(), reason="QGIS Python (qgis.core) not installed")
def test_qgis_loads_styles_as_defaults(tmp_path: Path) -> None:
    classes = default_classes(["water", "forest", "urban"])
    tif = write_classes_tif(tmp_path / "classes.tif", classes)
    write_category_names(tif, classes)
    write_raster_qml(tmp_path / "classes.qml", classes)
    with rasterio.open(tmp_path / "confidence.tif", "w", driver="GTiff", width=4, height=4,
                       count=1, dtype="float32", crs="EPSG:32633",
                       transform=Affine(0.5, 0, 500_000, 0, -0.5, 5_000_000)) as ds:
        ds.write(np.full((1, 4, 4), 0.5, np.float32))
    write_confidence_qml(tmp_path / "confidence.qml")
    vectorize_classes(tif, tmp_path / "polygons.gpkg", classes)
    write_polygons_qml(tmp_path / "polygons.qml", classes)

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    run = subprocess.run([QGIS_PYTHON, "-c", QGIS_SCRIPT, str(tmp_path)], capture_output=True,
                         text=True, env=env, timeout=120)
    line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line, run.stdout + run.stderr
    out = json.loads(line[len("RESULT"):])
    assert out["classes"] == [[c.id, c.color, c.name] for c in classes]
    assert out["confidence"] == ["singlebandpseudocolor", 0.0, 1.0]
    kind, attr, crs, count, cats = out["polygons"]
    assert (kind, attr, crs, count) == ("categorizedSymbol", "class_id", "EPSG:32633", 3)
    assert cats == [[str(c.id), c.name, c.color] for c in classes]
    assert "GeoPackage" not in run.stderr  # no version warning from QGIS's older GDAL
