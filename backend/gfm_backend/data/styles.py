"""Styles that make QGIS show class names and colours as soon as an output is added.

QGIS loads `<name>.qml` beside a data file as its default style, so `classes.qml`,
`confidence.qml` and `polygons.qml` written next to the outputs are all it takes.
The GeoTIFF also gets a colour table (rasterio `write_colormap`) and GDAL category
names (a PAM `.aux.xml`), so other GDAL-based tools show the classes too.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ..atomic import write_text_atomic
from ..package import ClassInfo

QGIS_VERSION = "3.22.0-Białowieża"
# viridis at 0, 0.25, 0.5, 0.75, 1: readable for colour-blind users and in greyscale
VIRIDIS = ((0.0, "#440154"), (0.25, "#3b528b"), (0.5, "#21918c"), (0.75, "#5ec962"),
           (1.0, "#fde725"))
POLYGON_FILL_ALPHA = 128  # half transparent so the imagery stays visible underneath


def colormap(classes: list[ClassInfo], nodata: int = 255) -> dict[int, tuple[int, int, int, int]]:
    """Colour table for `rasterio` `write_colormap`: class colours, nodata transparent."""
    cmap = {c.id: (*c.rgb, 255) for c in classes if c.id != nodata}
    cmap[nodata] = (0, 0, 0, 0)
    return cmap


def write_category_names(tif_path: Path | str, classes: list[ClassInfo], nodata: int = 255) -> Path:
    """Write band 1 category names to the GDAL PAM sidecar `tif_path + '.aux.xml'`.

    GeoTIFF cannot hold category names itself; GDAL (and so QGIS' identify tool and
    gdalinfo) reads them from the sidecar. Entry i names value i, gaps get empty names.
    Call it after the GeoTIFF is closed: GDAL rewrites the sidecar when it closes a
    dataset it changed. Other content of an existing sidecar is kept.
    """
    path = Path(f"{tif_path}.aux.xml")
    names = {c.id: c.name for c in classes if c.id != nodata}
    top = max(names, default=-1)
    root = _read_pam(path)
    band = next((b for b in root.findall("PAMRasterBand") if b.get("band") == "1"), None)
    if band is None:
        band = ET.SubElement(root, "PAMRasterBand", band="1")
    for old in band.findall("CategoryNames"):
        band.remove(old)
    cats = ET.Element("CategoryNames")
    for value in range(top + 1):
        ET.SubElement(cats, "Category").text = names.get(value, "")
    band.insert(0, cats)
    _write_xml(path, root, doctype=None)
    return path


def write_raster_qml(qml_path: Path | str, classes: list[ClassInfo], nodata: int = 255,
                     see_through: frozenset[int] = frozenset()) -> Path:
    """Paletted style for classes.tif: one legend entry per class with its name and colour
    (`see_through` classes listed but transparent: a GeoTIFF palette has no alpha, so only
    the style can let a change map's "no change" show the image below)."""
    root = _qgis_root("AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    renderer = _raster_renderer(pipe, "paletted")
    palette = ET.SubElement(renderer, "colorPalette")
    for c in classes:
        if c.id == nodata:
            continue
        ET.SubElement(palette, "paletteEntry", value=str(c.id), color=_hex(c.rgb),
                      label=c.name, alpha="0" if c.id in see_through else "255")
    _raster_pipe_tail(pipe)
    ET.SubElement(root, "blendMode").text = "0"
    _write_xml(Path(qml_path), root)
    return Path(qml_path)


def write_confidence_qml(qml_path: Path | str) -> Path:
    """Pseudocolour style for confidence.tif: fixed 0..1 viridis ramp, so runs compare."""
    root = _qgis_root("AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    renderer = _raster_renderer(pipe, "singlebandpseudocolor", classificationMin="0",
                                classificationMax="1")
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader",
                           colorRampType="INTERPOLATED", classificationMode="1", clip="0",
                           minimumValue="0", maximumValue="1", labelPrecision="2")
    stops = ":".join(f"{v};{_rgba(_rgb(h))}" for v, h in VIRIDIS[1:-1])
    _color_ramp(shader, {
        "color1": _rgba(_rgb(VIRIDIS[0][1])), "color2": _rgba(_rgb(VIRIDIS[-1][1])),
        "discrete": "0", "rampType": "gradient", "stops": stops,
    })
    for v, h in VIRIDIS:
        ET.SubElement(shader, "item", alpha="255", value=_num(v), label=f"{v:.2f}", color=h)
    _raster_pipe_tail(pipe)
    ET.SubElement(root, "blendMode").text = "0"
    _write_xml(Path(qml_path), root)
    return Path(qml_path)


def write_polygons_qml(qml_path: Path | str, classes: list[ClassInfo],
                       field: str = "class_id") -> Path:
    """Categorized style for polygons.gpkg on `field`: class colour fill, legend = class names."""
    root = _qgis_root("Symbology")
    renderer = ET.SubElement(root, "renderer-v2", type="categorizedSymbol", attr=field,
                             symbollevels="0", enableorderby="0", forceraster="0",
                             referencescale="-1")
    cats = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for i, c in enumerate(classes):
        ET.SubElement(cats, "category", render="true", symbol=str(i), value=str(c.id),
                      label=c.name)
        _fill_symbol(symbols, str(i), c.rgb)
    source = ET.SubElement(renderer, "source-symbol")
    _fill_symbol(source, "0", (200, 200, 200))
    ET.SubElement(renderer, "rotation")
    ET.SubElement(renderer, "sizescale")
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerGeometryType").text = "2"  # polygon
    _write_xml(Path(qml_path), root)
    return Path(qml_path)


def _qgis_root(categories: str) -> ET.Element:
    return ET.Element("qgis", version=QGIS_VERSION, styleCategories=categories,
                      hasScaleBasedVisibilityFlag="0", minScale="1e+08", maxScale="0")


def _raster_renderer(pipe: ET.Element, kind: str, **extra: str) -> ET.Element:
    provider = ET.SubElement(pipe, "provider")
    ET.SubElement(provider, "resampling", enabled="false", maxOversampling="2",
                  zoomedInResamplingMethod="nearestNeighbour",
                  zoomedOutResamplingMethod="nearestNeighbour")
    attributes = {"type": kind, "opacity": "1", "alphaBand": "-1", "band": "1",
                  "nodataColor": ""} | extra
    renderer = ET.SubElement(pipe, "rasterrenderer", attributes)
    ET.SubElement(renderer, "rasterTransparency")
    mmo = ET.SubElement(renderer, "minMaxOrigin")
    for tag, text in (("limits", "None"), ("extent", "WholeRaster"),
                      ("statAccuracy", "Estimated"), ("cumulativeCutLower", "0.02"),
                      ("cumulativeCutUpper", "0.98"), ("stdDevFactor", "2")):
        ET.SubElement(mmo, tag).text = text
    return renderer


def _raster_pipe_tail(pipe: ET.Element) -> None:
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", invertColors="0",
                  colorizeOn="0", colorizeRed="255", colorizeGreen="128", colorizeBlue="128",
                  colorizeStrength="100")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(pipe, "resamplingStage").text = "resamplingFilter"


def _fill_symbol(parent: ET.Element, name: str, rgb: tuple[int, int, int]) -> None:
    symbol = ET.SubElement(parent, "symbol", type="fill", name=name, alpha="1",
                           clip_to_extent="1", force_rhr="0")
    layer = ET.SubElement(symbol, "layer",
                          {"class": "SimpleFill", "enabled": "1", "pass": "0", "locked": "0"})
    props = {
        "border_width_map_unit_scale": "3x:0,0,0,0,0,0",
        "color": _rgba(rgb, POLYGON_FILL_ALPHA),
        "joinstyle": "bevel",
        "offset": "0,0",
        "offset_map_unit_scale": "3x:0,0,0,0,0,0",
        "offset_unit": "MM",
        "outline_color": _rgba(rgb),
        "outline_style": "solid",
        "outline_width": "0.26",
        "outline_width_unit": "MM",
        "style": "solid",
    }
    _options(layer, props)


def _color_ramp(parent: ET.Element, props: dict[str, str]) -> None:
    ramp = ET.SubElement(parent, "colorramp", type="gradient", name="[source]")
    _options(ramp, props)


def _options(parent: ET.Element, props: dict[str, str]) -> None:
    """QGIS 3.22 reads `<Option type="Map">`; older 3.x read `<prop k v>`: write both."""
    opt = ET.SubElement(parent, "Option", type="Map")
    for k, v in props.items():
        ET.SubElement(opt, "Option", type="QString", name=k, value=v)
    for k, v in props.items():
        ET.SubElement(parent, "prop", k=k, v=v)


def _rgb(hex_color: str) -> tuple[int, int, int]:
    h = hex_color.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _rgba(rgb: tuple[int, int, int], alpha: int = 255) -> str:
    return f"{rgb[0]},{rgb[1]},{rgb[2]},{alpha}"


def _num(v: float) -> str:
    return f"{v:g}"


def _read_pam(path: Path) -> ET.Element:
    if path.exists():
        try:
            root = ET.parse(path).getroot()
            if root.tag == "PAMDataset":
                return root
        except ET.ParseError:
            pass  # a broken sidecar is replaced, as GDAL itself would
    return ET.Element("PAMDataset")


def _write_xml(path: Path, root: ET.Element, doctype: str | None = "<!DOCTYPE qgis "
               "PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>") -> None:
    """Indented UTF-8 XML, written to a temporary name and renamed (never half written)."""
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    head = doctype + "\n" if doctype else ""
    write_text_atomic(path, head + body + "\n")
