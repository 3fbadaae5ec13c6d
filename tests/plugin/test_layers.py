"""Layer helpers in real QGIS: labels layer, styled results, raster export."""

from __future__ import annotations

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransformContext,
    QgsFeature,
    QgsGeometry,
    QgsPalettedRasterRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsVectorLayerUtils,
)

from gfm_plugin import layers


def test_labels_layer_is_ready_to_draw(qgis_app, tmp_path):
    crs = QgsCoordinateReferenceSystem("EPSG:32633")
    layer = layers.create_labels_layer(str(tmp_path / "labels.gpkg"), crs, ["water", "forest"])
    assert layer.isEditable() and layer.crs() == crs
    assert layers.label_classes(layer) == ["water", "forest"]
    layers.set_label_classes(layer, ["water", "forest", "field"])
    assert layers.label_classes(layer) == ["water", "forest", "field"]
    feature = QgsFeature(layer.fields())
    feature.setGeometry(QgsGeometry.fromWkt("POLYGON((0 0, 10 0, 10 10, 0 10, 0 0))"))
    feature["class"] = "water"
    assert layer.addFeature(feature) and layer.commitChanges()
    assert layer.featureCount() == 1
    assert layers.vector_file_path(layer) == str(tmp_path / "labels.gpkg")
    QgsProject.instance().removeMapLayer(layer.id())


def test_classify_results_load_styled_in_a_group(qgis_app, backend_outputs):
    project = QgsProject.instance()
    group = layers.add_classify_results(str(backend_outputs / "classified"), "scene", project)
    assert group.name() == "scene"
    names = [node.layer().name() for node in group.findLayers()]
    assert names == ["polygons", "classes", "confidence"]
    classes = next(n.layer() for n in group.findLayers() if n.layer().name() == "classes")
    renderer = classes.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    labels = {c.label for c in renderer.classes()}
    assert {"water", "forest", "field", "built-up"} <= labels
    polygons = next(n.layer() for n in group.findLayers() if n.layer().name() == "polygons")
    assert polygons.renderer().type() == "categorizedSymbol"
    assert polygons.crs().authid() == "EPSG:32633"
    project.removeAllMapLayers()
    project.layerTreeRoot().removeAllChildren()


def test_raster_export_of_extent(qgis_app, backend_outputs, tmp_path):
    layer = QgsRasterLayer(str(backend_outputs / "scene.tif"), "scene")
    assert layers.raster_file_path(layer) == str(backend_outputs / "scene.tif")
    ext = layer.extent()
    half = QgsRectangle(ext.xMinimum(), ext.yMinimum(), ext.center().x(), ext.center().y())
    out = layers.export_raster_extent(layer, half, 1.0, str(tmp_path / "export.tif"))
    exported = QgsRasterLayer(out, "export")
    assert exported.isValid() and exported.crs() == layer.crs()
    assert (exported.width(), exported.height()) == (64, 64)
    assert exported.bandCount() >= 3


def test_labels_layers_are_styled_named_apart_and_default_to_the_first_class(qgis_app, tmp_path):
    crs = QgsCoordinateReferenceSystem("EPSG:32633")
    first = layers.create_labels_layer(str(tmp_path / "a.gpkg"), crs, ["Building", "Road"])
    second = layers.create_labels_layer(str(tmp_path / "b.gpkg"), crs, ["Building"])
    assert first.name() == "GFM training labels" and second.name() == "GFM training labels 2"
    renderer = first.renderer()
    assert renderer.type() == "categorizedSymbol" and renderer.classAttribute() == "class"
    categories = renderer.categories()  # copies: keep them while their symbols are read
    assert [c.label() for c in categories] == ["Building", "Road", "no class yet"]
    assert 0 < categories[0].symbol().color().alpha() < 255  # the image shows through
    assert categories[0].symbol().color().name() == layers.LABEL_PALETTE[0]  # its own colour
    assert categories[-1].symbol().color().name() == "#ffffff"
    drawn = QgsGeometry.fromWkt("POLYGON((0 0, 10 0, 10 10, 0 10, 0 0))")
    feature = QgsVectorLayerUtils.createFeature(first, drawn)  # what QGIS's digitizing does
    assert first.addFeature(feature) and first.commitChanges()
    assert next(first.getFeatures())["class"] == "Building"
    for layer in (first, second):
        QgsProject.instance().removeMapLayer(layer.id())


def write_polygons(path, rows, fields):
    layer = QgsVectorLayer("Polygon?crs=EPSG:32633&" + "&".join(f"field={f}" for f in fields),
                           "l", "memory")
    for i, values in enumerate(rows):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromWkt(f"POLYGON(({i} 0, {i + 1} 0, {i + 1} 1, {i} 0))"))
        feature.setAttributes(values)
        layer.dataProvider().addFeature(feature)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(path), QgsCoordinateTransformContext(),
                                             options)
    return QgsVectorLayer(str(path), path.stem, "ogr")


def test_the_class_field_is_class_else_a_text_field_never_the_key(qgis_app, tmp_path):
    lake = write_polygons(tmp_path / "lake.gpkg", [["a", 1], ["b", 2]], ["name:string", "code:integer"])
    assert lake.fields().names()[0] == "fid" and layers.class_field_for(lake) == "name"
    coded = write_polygons(tmp_path / "coded.gpkg", [[1], [2]], ["code:integer"])
    assert layers.class_field_for(coded) == "code"
    labelled = write_polygons(tmp_path / "l.gpkg", [["x", "water"]], ["note:string", "Class:string"])
    assert layers.class_field_for(labelled) == "Class"


def test_one_class_per_polygon_or_a_single_class_is_named(qgis_app, tmp_path):
    each = write_polygons(tmp_path / "each.gpkg", [["a"], ["b"], ["c"]], ["name:string"])
    assert "3 classes of one polygon each" in layers.class_problem(each, "name")
    assert "one class" in layers.class_problem(each, None)
    same = write_polygons(tmp_path / "same.gpkg", [["w"], ["w"], ["w"]], ["name:string"])
    assert "a single class" in layers.class_problem(same, "name")
    fine = write_polygons(tmp_path / "fine.gpkg", [["w"], ["w"], ["f"]], ["name:string"])
    assert layers.class_problem(fine, "name") is None
