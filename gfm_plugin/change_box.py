"""The dock's "Detect changes" group: two dates, a change model, and training for changes.

Widgets only (`ChangeActions` connects them). The group is collapsible and starts folded,
so the dock stays short on a laptop screen until the analyst needs it.
"""

from __future__ import annotations

from qgis.core import QgsMapLayerProxyModel
from qgis.gui import QgsCollapsibleGroupBox, QgsFieldComboBox, QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import QComboBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout

CHANGE_TASK = "change_detection"


def is_change_model(model: dict) -> bool:
    spec = model.get("model") or model.get("model_json") or {}
    return spec.get("task") == CHANGE_TASK


def _raster_combo(tooltip: str) -> QgsMapLayerComboBox:
    combo = QgsMapLayerComboBox()
    combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
    combo.setToolTip(tooltip)
    return combo


class ChangeBox(QgsCollapsibleGroupBox):
    """Before and after rasters, the change model, Detect changes; then the change labels,
    their kind-of-change field and Fine-tune for changes."""

    def __init__(self, parent=None) -> None:
        super().__init__("Detect changes", parent)
        layout = QVBoxLayout(self)
        self.before_combo = _raster_combo("The earlier image: the result is on its grid")
        self.after_combo = _raster_combo("The later image: any CRS, pixel size or extent; it is "
                                         "warped onto the earlier one where they overlap")
        for text, combo in (("Before (earlier date)", self.before_combo),
                            ("After (later date)", self.after_combo)):
            layout.addWidget(QLabel(text))
            layout.addWidget(combo)
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("Change models the backend has (Fine-tune for changes below)")
        layout.addWidget(QLabel("Change model"))
        layout.addWidget(self.model_combo)
        self.detect_button = QPushButton("Detect changes")
        layout.addWidget(self.detect_button)
        layout.addLayout(self._training_rows())
        self.setCollapsed(True)

    def _training_rows(self) -> QVBoxLayout:
        rows = QVBoxLayout()
        kinds = QHBoxLayout()
        self.kinds_edit = QLineEdit()
        self.kinds_edit.setPlaceholderText("kinds of change, e.g. new building, cleared")
        self.kinds_edit.setToolTip("Comma-separated; leave empty to map change / no change")
        self.new_labels_button = QPushButton("New change-labels layer")
        kinds.addWidget(self.kinds_edit, 1)
        rows.addLayout(kinds)
        rows.addWidget(self.new_labels_button)
        self.labels_combo = QgsMapLayerComboBox()
        self.labels_combo.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
        self.labels_combo.setToolTip("Polygons drawn where something changed (on either date); "
                                     "everything outside them counts as no change")
        self.field_combo = QgsFieldComboBox()
        self.field_combo.setAllowEmptyFieldName(True)
        self.field_combo.setToolTip("The kind of change of each polygon (empty: one kind, change)")
        self.labels_combo.layerChanged.connect(self.field_combo.setLayer)
        rows.addWidget(QLabel("Change polygons and kind-of-change field"))
        rows.addWidget(self.labels_combo)
        rows.addWidget(self.field_combo)
        self.model_name_edit = QLineEdit()
        self.model_name_edit.setPlaceholderText("new change model name")
        rows.addWidget(self.model_name_edit)
        self.finetune_button = QPushButton("Fine-tune for changes")
        self.finetune_button.setToolTip("Uses the encoder and epochs chosen under Fine-tune")
        rows.addWidget(self.finetune_button)
        return rows

    def set_models(self, models: list[dict]) -> None:
        """The change models among the backend's (the current one kept)."""
        current = self.model_combo.currentData()
        self.model_combo.clear()
        for m in models:
            if is_change_model(m):
                spec = m.get("model") or m.get("model_json") or {}
                self.model_combo.addItem(str(spec.get("name") or m.get("name")), m)
        index = self.model_combo.findData(current) if current else -1
        self.model_combo.setCurrentIndex(max(index, 0))

    def pair_name(self) -> str:
        before, after = self.before_combo.currentLayer(), self.after_combo.currentLayer()
        return f"{before.name() if before else '?'} → {after.name() if after else '?'}"
