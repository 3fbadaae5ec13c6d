"""Layer helpers: results in as styled layers, training-label layers out, rasters to files.

Runs in QGIS's Python only (qgis + stdlib). The backend works on files, so layers that
are not files (WMS, XYZ, memory) are first written to a GeoTIFF.
"""

from __future__ import annotations

import os
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsDefaultValue,
    QgsDistanceArea,
    QgsEditorWidgetSetup,
    QgsField,
    QgsFields,
    QgsFillSymbol,
    QgsLayerTreeGroup,
    QgsPointXY,
    QgsProject,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsRectangle,
    QgsRendererCategory,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QMetaType

if Qgis.QGIS_VERSION_INT >= 33800:  # QgsField takes QMetaType from 3.38; Qt 6 has no QVariant types
    TEXT_TYPE = QMetaType.Type.QString
else:
    from qgis.PyQt.QtCore import QVariant

    TEXT_TYPE = QVariant.String

LABEL_FIELD = "class"
FILE_PROVIDERS = {"gdal"}
KEY_NAMES = {"fid", "id", "ogc_fid", "objectid", "gid", "pk"}
LABEL_PALETTE = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a6cee3", "#a65628",
                 "#f781bf", "#999999", "#ffff33")


def class_field_for(layer: QgsVectorLayer) -> str | None:
    """The field that most likely holds each polygon's class: `class` when there is one,
    else the first text field, else the first integer field; never the primary key."""
    fields = layer.fields()
    keys = set(layer.primaryKeyAttributes())
    usable = [f for i, f in enumerate(fields) if i not in keys and f.name().lower() not in KEY_NAMES]
    for field in usable:
        if field.name().lower() == LABEL_FIELD:
            return field.name()
    texts = [f for f in usable if f.type() == QMetaType.Type.QString]
    ints = [f for f in usable if f.type() in (QMetaType.Type.Int, QMetaType.Type.LongLong,
                                               QMetaType.Type.UInt)]
    chosen = texts or ints
    return chosen[0].name() if chosen else None


RESULT_FIELDS = frozenset({"class_id", "class_name"})  # polygons.gpkg of a classify


def is_result_layer(layer: QgsVectorLayer) -> bool:
    """A classify's polygons (every square of the map is in them), not drawn labels."""
    return RESULT_FIELDS <= set(layer.fields().names())


def class_problem(layer: QgsVectorLayer, field: str | None,
                  one_class_ok: bool = False) -> str | None:
    """Why training on `field` would not give the classes the analyst means, if it would not.
    `one_class_ok`: one class is what is meant (change against no change)."""
    count = layer.featureCount()
    values = layer.uniqueValues(layer.fields().indexFromName(field)) if field else set()
    if one_class_ok and len(values) <= 1:
        return None
    if not field:
        return (f"no class field is chosen: all {count} polygons of {layer.name()} become one "
                "class (e.g. building footprints against nothing else)")
    if len(values) == 1:
        return f"every polygon has the same {field} ({next(iter(values))!r}): a single class"
    if count > 2 and len(values) == count:
        return f"every polygon has its own {field}: {count} classes of one polygon each"
    return None


def raster_file_path(layer: QgsRasterLayer) -> str | None:
    """The file behind a raster layer, or None when it is not a local GDAL file."""
    if layer.providerType() not in FILE_PROVIDERS:
        return None
    source = layer.source().split("|")[0]
    return source if os.path.isfile(source) else None


def vector_file_path(layer: QgsVectorLayer) -> str | None:
    """The file (and layer name for multi-layer files) behind an OGR vector layer."""
    if layer.providerType() != "ogr":
        return None
    source = layer.source().split("|")[0]
    return source if os.path.isfile(source) else None


def export_raster_extent(layer: QgsRasterLayer, extent: QgsRectangle, pixel_size: float,
                         out_path: str, crs: QgsCoordinateReferenceSystem | None = None) -> str:
    """Render `layer` (any provider: WMS, XYZ, memory...) over `extent` to a GeoTIFF.

    `extent` and `pixel_size` are in `crs` (default: the layer's CRS).
    """
    crs = crs or layer.crs()
    width = max(1, int(round(extent.width() / pixel_size)))
    height = max(1, int(round(extent.height() / pixel_size)))
    pipe = QgsRasterPipe()
    provider = layer.dataProvider().clone()
    if not pipe.set(provider):
        raise RuntimeError(f"cannot read layer {layer.name()!r}")
    if layer.renderer() is not None and layer.providerType() != "gdal":
        # web layers deliver rendered RGB(A): write what the analyst sees
        pipe.set(layer.renderer().clone())
    writer = QgsRasterFileWriter(out_path)
    writer.setOutputFormat("GTiff")
    writer.setCreateOptions(["COMPRESS=DEFLATE", "TILED=YES"])
    tmp_error = writer.writeRaster(pipe, width, height, extent, crs,
                                   QgsCoordinateTransformContext())
    if tmp_error != QgsRasterFileWriter.WriterError.NoError:
        raise RuntimeError(f"could not write {out_path} (error {tmp_error})")
    return out_path


def unique_layer_name(name: str, project: QgsProject | None = None) -> str:
    taken = {layer.name() for layer in (project or QgsProject.instance()).mapLayers().values()}
    candidate, i = name, 2
    while candidate in taken:
        candidate, i = f"{name} {i}", i + 1
    return candidate


MAX_EXPORT_PX = 20_000  # per side: beyond this the view is too large for the model's GSD


def units_per_metre(crs: QgsCoordinateReferenceSystem, at: QgsPointXY) -> float:
    """Layer units that make one metre on the ground at `at` (Web Mercator: 1/cos(lat))."""
    area = QgsDistanceArea()
    area.setSourceCrs(crs, QgsProject.instance().transformContext())
    area.setEllipsoid("WGS84")
    step = max(abs(at.x()), 1.0) * 1e-6
    metres = area.measureLine(at, QgsPointXY(at.x() + step, at.y()))
    return step / metres if metres > 0 else 1.0


def export_plan(layer: QgsRasterLayer, view: QgsRectangle, view_crs: QgsCoordinateReferenceSystem,
                gsd_m: float | None, fallback_px: float) -> tuple[QgsRectangle, float]:
    """The extent (in the layer's CRS: the map view, warped) and pixel size to export a
    non-file layer at: the model's ground sample distance when it has one."""
    to_layer = QgsCoordinateTransform(view_crs, layer.crs(), QgsProject.instance())
    extent = to_layer.transformBoundingBox(view)
    if not layer.extent().isEmpty():
        extent = extent.intersect(layer.extent())
    if gsd_m:
        return extent, gsd_m * units_per_metre(layer.crs(), extent.center())
    return extent, fallback_px


def typed_class_names(text: str) -> list[str]:
    """'Building, Hydro,, Road' -> ['Building', 'Hydro', 'Road'] (empty names dropped)."""
    names: list[str] = []
    for part in text.split(","):
        if part.strip() and part.strip() not in names:
            names.append(part.strip())
    return names


def create_labels_layer(path: str, crs: QgsCoordinateReferenceSystem, classes: list[str],
                        name: str = "GFM training labels") -> QgsVectorLayer:
    """A GeoPackage polygon layer with a `class` field whose widget is a value map of
    `classes`, added to the project in editing mode so the analyst can just draw."""
    fields = QgsFields()
    fields.append(QgsField(LABEL_FIELD, TEXT_TYPE))
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = "labels"
    writer = QgsVectorFileWriter.create(path, fields, QgsWkbTypes.Type.MultiPolygon, crs,
                                        QgsCoordinateTransformContext(), options)
    if writer.hasError() != QgsVectorFileWriter.WriterError.NoError:
        raise RuntimeError(f"cannot create {path}: {writer.errorMessage()}")
    del writer  # closes the file
    layer = QgsVectorLayer(f"{path}|layername=labels", unique_layer_name(name), "ogr")
    if not layer.isValid():
        raise RuntimeError(f"cannot open {path}")
    set_label_classes(layer, classes)
    QgsProject.instance().addMapLayer(layer)
    layer.startEditing()
    return layer


def set_label_classes(layer: QgsVectorLayer, classes: list[str]) -> None:
    """Make the class field a drop-down of `classes` (QGIS value map widget)."""
    idx = layer.fields().indexFromName(LABEL_FIELD)
    if idx < 0:
        raise ValueError(f"layer {layer.name()!r} has no field {LABEL_FIELD!r}")
    value_map = {"map": [{c: c} for c in classes]}
    layer.setEditorWidgetSetup(idx, QgsEditorWidgetSetup("ValueMap", value_map))
    if classes:  # a new polygon gets the first class, never NULL
        layer.setDefaultValueDefinition(idx, QgsDefaultValue(_quoted(classes[0])))
    style_labels(layer, classes)


def _rgba(hex_color: str, alpha: int) -> str:
    """QGIS's "r,g,b,a" colour text (an 8-digit hex would be read as #AARRGGBB)."""
    value = hex_color.lstrip("#")
    return ",".join(str(int(value[i:i + 2], 16)) for i in (0, 2, 4)) + f",{alpha}"


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def style_labels(layer: QgsVectorLayer, classes: list[str]) -> None:
    """One colour per class, half transparent with a solid outline: the image stays
    visible under the polygons and each polygon's class shows."""
    categories = []
    for i, name in enumerate(classes):
        color = LABEL_PALETTE[i % len(LABEL_PALETTE)]
        symbol = QgsFillSymbol.createSimple({"color": _rgba(color, 102), "outline_color": color,
                                             "outline_width": "0.6"})
        categories.append(QgsRendererCategory(name, symbol, name))
    other = QgsFillSymbol.createSimple({"color": _rgba("#ffffff", 68), "outline_color": "#333333",
                                        "outline_width": "0.6", "outline_style": "dash"})
    categories.append(QgsRendererCategory(None, other, "no class yet"))
    layer.setRenderer(QgsCategorizedSymbolRenderer(LABEL_FIELD, categories))
    layer.triggerRepaint()


def label_classes(layer: QgsVectorLayer) -> list[str]:
    """The class list of a labels layer's value map (empty when it has none)."""
    idx = layer.fields().indexFromName(LABEL_FIELD)
    if idx < 0:
        return []
    setup = layer.editorWidgetSetup(idx)
    if setup.type() != "ValueMap":
        return []
    return [list(entry.values())[0] for entry in setup.config().get("map", [])]


CLASSIFY_LAYERS = (("polygons.gpkg", "polygons", "vector"), ("classes.tif", "classes", "raster"),
                   ("confidence.tif", "confidence", "raster"))
CHANGE_LAYERS = (("polygons.gpkg", "changed regions", "vector"), ("change.tif", "change", "raster"),
                 ("confidence.tif", "confidence", "raster"))


def add_change_results(files: dict[str, str] | str, group_name: str,
                       project: QgsProject | None = None) -> QgsLayerTreeGroup:
    """A detect-change job's results under one group named after the pair."""
    return add_classify_results(files, group_name, project, CHANGE_LAYERS)


def add_classify_results(files: dict[str, str] | str, group_name: str,
                         project: QgsProject | None = None,
                         specs: tuple[tuple[str, str, str], ...] = CLASSIFY_LAYERS) -> QgsLayerTreeGroup:
    """Load classes, confidence and polygons of a classify job, styled, under one
    layer-tree group named after the input layer. `files` is the job's `outputs.files`
    (name -> path, as the backend wrote them), or an output folder."""
    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    group = root.insertGroup(0, group_name)
    if isinstance(files, str):
        files = {p.name: str(p) for p in Path(files).iterdir()}
    for filename, title, kind in specs:
        if filename not in files or not Path(files[filename]).exists():
            continue
        path = Path(files[filename])
        if kind == "raster":
            layer = QgsRasterLayer(str(path), title)  # the group carries the input's name, so
        else:  # the Layers panel never truncates three layers to the same text
            layer = QgsVectorLayer(f"{path}|layername=polygons", title, "ogr")
        if not layer.isValid():
            continue
        qml = files.get(Path(filename).with_suffix(".qml").name)
        if qml and Path(qml).exists():
            layer.loadNamedStyle(qml)
        project.addMapLayer(layer, False)
        node = group.addLayer(layer)
        if title == "confidence":
            node.setItemVisibilityChecked(False)
    return group

