"""Layer helpers in real QGIS: labels layer, styled results, raster export."""

from __future__ import annotations

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsGeometry,
    QgsPalettedRasterRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
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
    assert names == ["scene polygons", "scene classes", "scene confidence"]
    classes = next(n.layer() for n in group.findLayers() if n.layer().name() == "scene classes")
    renderer = classes.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    labels = {c.label for c in renderer.classes()}
    assert {"water", "forest", "field", "built-up"} <= labels
    polygons = next(n.layer() for n in group.findLayers() if n.layer().name() == "scene polygons")
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
