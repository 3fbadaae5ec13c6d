"""Where to label next, in the dock: a suggest job over the Classify raster with the
selected model, its squares added as a styled layer, and stepping through them (zoom,
select, the training-labels layer made active so the analyst draws right away)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsCoordinateTransform,
    QgsFillSymbol,
    QgsPalLayerSettings,
    QgsProject,
    QgsSingleSymbolRenderer,
    QgsTextFormat,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtGui import QColor

from . import layers
from .output_folders import folder_for, new_file, safe_name

OUTLINE = "255,120,0,255"  # orange: stands out on imagery and on the class colours


class SuggestActions:
    def __init__(self, controller) -> None:
        self.c = controller
        self.row = controller.dock.suggest_row
        self.row.suggest_button.clicked.connect(self.suggest)
        self.row.prev_button.clicked.connect(lambda: self.step(-1))
        self.row.next_button.clicked.connect(lambda: self.step(1))
        self.layer: QgsVectorLayer | None = None
        self.ids: list[int] = []  # feature ids by rank
        self.index = -1

    def suggest(self):
        """Start a suggest job; its layer is added and the first suggestion shown."""
        d = self.c.dock
        raster, model = d.raster_combo.currentLayer(), d.current_model()
        if raster is None or not model:
            self.c.error("pick the raster (under Classify layer) and a model: suggestions "
                         "come from the model's doubts over that raster")
            return None
        path = layers.raster_file_path(raster)
        if path is None:
            self.c.error(f"{raster.name()} is not a file: save it as GeoTIFF first")
            return None
        out = new_file(folder_for("results", self.c.settings.results_dir),
                       f"{safe_name(raster.name())}-suggestions", ".gpkg")
        remote = self.c.settings.mode == "remote"
        params = {"raster": path, "model": model["path"], "count": self.row.count_spin.value(),
                  "out": {"output": out.name} if remote else str(out)}
        labels = self._labels_file()
        if labels:
            params["labels"] = labels
        uploads = ("raster",) + (("labels",) if labels else ()) if remote else ()
        return self.c.run_job(f"Suggest {raster.name()}", "suggest", params,
                              lambda info: self._loaded(info, out, raster.name()),
                              uploads=uploads, download_to=out.parent)

    def _labels_file(self) -> str | None:
        """The training-labels layer's file, its edits saved, when one is chosen."""
        labels = self.c.dock.labels_combo.currentLayer()
        if labels is None or labels.featureCount() == 0 or layers.is_result_layer(labels):
            return None  # a map's own polygons are no labels to stay away from
        if labels.isEditable() and labels.isModified():
            labels.commitChanges(False)
        return layers.vector_file_path(labels)

    def _loaded(self, info: dict, out: Path, name: str) -> None:
        files = (info.get("outputs") or {}).get("files") or {}
        path = files.get(out.name) or next(iter(files.values()), str(out))
        layer = add_suggestions_layer(path, layers.unique_layer_name(f"{name} suggestions"))
        if layer is None:
            self.c.error(f"could not open the suggestions in {path}")
            return
        self.show(layer)
        count = len(self.ids)
        self.c.info(f"{count} places to label next on {name}: ◀ ▶ in the dock step through them")
        self.c.msg.show_warnings(f"Suggest {name}", info)

    def show(self, layer: QgsVectorLayer) -> None:
        """Step through `layer`'s suggestions from the best one."""
        by_rank = sorted(layer.getFeatures(), key=lambda f: f["rank"])
        self.layer, self.ids, self.index = layer, [f.id() for f in by_rank], -1
        self.row.set_stepping(bool(self.ids))
        if self.ids:
            self.step(1)
        else:
            self.row.position.setText("no place found apart from the labels")

    def step(self, delta: int) -> None:
        """Zoom to the next (or previous) suggestion and select it."""
        if self.layer is None or not self.ids:
            return
        self.index = (self.index + delta) % len(self.ids)
        feature = self.layer.getFeature(self.ids[self.index])
        self.row.position.setText(
            f"{self.index + 1}/{len(self.ids)}: {feature['hesitates']} "
            f"(unsure {feature['uncertainty']:.2f})")
        iface = self.c.iface
        if iface is None:
            return
        canvas = iface.mapCanvas()
        to_map = QgsCoordinateTransform(self.layer.crs(), canvas.mapSettings().destinationCrs(),
                                        QgsProject.instance())
        box = to_map.transformBoundingBox(feature.geometry().boundingBox())
        box.scale(3.0)  # the square and its surroundings
        canvas.setExtent(box)
        canvas.refresh()
        canvas.flashFeatureIds(self.layer, [feature.id()])  # a selection would hide the image
        labels = self.c.dock.labels_combo.currentLayer()
        if labels is not None:
            iface.setActiveLayer(labels)  # draw the polygon right away


def add_suggestions_layer(path: str, name: str) -> QgsVectorLayer | None:
    """The suggestions, styled, on top of the layer tree."""
    layer = QgsVectorLayer(f"{path}|layername=suggestions", name, "ogr")
    if not layer.isValid():
        return None
    style_suggestions(layer)
    project = QgsProject.instance()
    project.addMapLayer(layer, False)
    project.layerTreeRoot().insertLayer(0, layer)
    return layer


def style_suggestions(layer: QgsVectorLayer) -> None:
    """Orange outlines (the image stays visible inside) labelled by rank."""
    symbol = QgsFillSymbol.createSimple({"color": "0,0,0,0", "outline_color": OUTLINE,
                                         "outline_width": "0.8", "outline_width_unit": "MM"})
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    settings = QgsPalLayerSettings()
    settings.fieldName = "rank"
    text = QgsTextFormat()
    text.setColor(QColor(255, 120, 0))
    text.setSize(11)
    buffer = text.buffer()
    buffer.setEnabled(True)
    buffer.setColor(QColor(255, 255, 255))
    text.setBuffer(buffer)
    settings.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
    layer.setLabelsEnabled(True)
