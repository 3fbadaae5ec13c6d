"""The GFM dock: pick a raster and a model, classify, draw labels, fine-tune, pretrain.

Widgets only; every action goes through `GfmController`, which owns the backend client
and runs jobs as QgsTasks so the window never freezes.
"""

from __future__ import annotations

from qgis.core import QgsMapLayerProxyModel, QgsProject, QgsRasterLayer
from qgis.gui import QgsCheckableComboBox, QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QColor, QIcon, QPixmap
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .change_box import ChangeBox, is_change_model
from .report_view import ReportView
from .suggest_row import SuggestRow


def _let_combos_shrink(body: QWidget) -> None:
    """Drop-downs as wide as the dock, not as their longest entry: a long encoder or layer
    name would otherwise make the dock wider than a laptop's screen leaves for it."""
    for combo in body.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(10)


def color_icon(hex_color: str) -> QIcon:
    pix = QPixmap(14, 14)
    pix.fill(QColor(hex_color))
    return QIcon(pix)


class GfmDock(QDockWidget):
    """The dock's widgets, group by group; `GfmController` connects them to the backend.

    The groups sit in a scroll area: on a 1280 x 800 screen (or beside the Processing
    toolbox) the dock is shorter than its content, and without one the Jobs list and
    QGIS's own status bar would be pushed off the screen."""

    def __init__(self, parent=None) -> None:
        super().__init__("GFM", parent)
        self.setObjectName("GfmDock")
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addLayout(self._status_row())
        layout.addWidget(self._classify_box())
        layout.addWidget(self._finetune_box())
        self.change = ChangeBox()
        layout.addWidget(self.change)
        self.pretrain_button = QPushButton("Pretrain…")
        layout.addWidget(self.pretrain_button)
        self._jobs_box(layout)
        self.report = ReportView()
        layout.addWidget(self.report)
        _let_combos_shrink(body)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(body)
        # scroll up and down only: never narrower than the widgets (plus the scroll bar)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(body.minimumSizeHint().width()
                               + scroll.verticalScrollBar().sizeHint().width())
        self.setWidget(scroll)
        self._job_items: dict[str, tuple[QTreeWidgetItem, QProgressBar]] = {}
        self.field_combo.setLayer(self.labels_combo.currentLayer())
        self.refresh_training_rasters()
        project = QgsProject.instance()
        # bound methods, not lambdas: Qt drops them with the dock, whereas a lambda would
        # outlive it and raise on the next layer added (fatal in a slot)
        project.layersAdded.connect(self._layers_changed)
        project.layersRemoved.connect(self._layers_changed)

    def _status_row(self) -> QVBoxLayout:
        """The status on a line of its own (the dock's full width), the buttons below it."""
        rows = QVBoxLayout()
        self.status = QLabel("backend: not connected")
        self.status.setWordWrap(True)
        rows.addWidget(self.status)
        buttons = QHBoxLayout()
        self.connect_button = QPushButton("Connect")
        self.settings_button = QPushButton("Settings…")
        buttons.addWidget(self.connect_button, 1)
        buttons.addWidget(self.settings_button, 1)
        rows.addLayout(buttons)
        self.outputs_label = QLabel()
        self.outputs_label.setWordWrap(True)
        rows.addWidget(self.outputs_label)
        return rows

    def _classify_box(self) -> QGroupBox:
        box = QGroupBox("Classify layer")
        cl = QVBoxLayout(box)
        self.raster_combo = QgsMapLayerComboBox()
        self.raster_combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        cl.addWidget(QLabel("Raster layer"))
        cl.addWidget(self.raster_combo)
        model_row = QHBoxLayout()
        self.model_combo = QComboBox()
        self.refresh_models_button = QPushButton("↻")
        self.refresh_models_button.setToolTip("Reload the model list from the backend")
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.refresh_models_button)
        cl.addWidget(QLabel("Model"))
        cl.addLayout(model_row)
        self.class_list = QListWidget()
        self.class_list.setMaximumHeight(90)
        cl.addWidget(self.class_list)
        self.classify_button = QPushButton("Classify layer")
        cl.addWidget(self.classify_button)
        return box

    def _finetune_box(self) -> QGroupBox:
        box = QGroupBox("Fine-tune")
        tl = QVBoxLayout(box)
        self.new_labels_button = QPushButton("New training-labels layer")
        tl.addWidget(self.new_labels_button)
        class_row = QHBoxLayout()
        self.class_name_edit = QLineEdit()
        self.class_name_edit.setPlaceholderText("class name, e.g. water")
        self.add_class_button = QPushButton("Add class")
        class_row.addWidget(self.class_name_edit, 1)
        class_row.addWidget(self.add_class_button)
        tl.addLayout(class_row)
        self.labels_combo = QgsMapLayerComboBox()
        self.labels_combo.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
        self.field_combo = QgsFieldComboBox()
        self.labels_combo.layerChanged.connect(self.field_combo.setLayer)
        self.training_rasters = QgsCheckableComboBox()
        self.training_rasters.setDefaultText("the Classify raster")
        self.training_rasters.setToolTip("The rasters the polygons are drawn over (several: "
                                         "each polygon takes its pixels from those it overlaps)")
        tl.addWidget(QLabel("Training rasters"))
        tl.addWidget(self.training_rasters)
        polygons_label = QLabel("Training polygons and class field")
        polygons_label.setWordWrap(True)
        tl.addWidget(polygons_label)
        tl.addWidget(self.labels_combo)
        tl.addWidget(self.field_combo)
        self.suggest_row = SuggestRow()
        tl.addWidget(self.suggest_row)
        self.model_name_edit = QLineEdit()
        self.model_name_edit.setPlaceholderText("new model name")
        tl.addWidget(self.model_name_edit)
        tl.addLayout(self._training_options())
        encoder_row = QHBoxLayout()
        self.get_weights_button = QPushButton("Get weights…")
        self.get_weights_button.setToolTip("Download or import pretrained encoders (gfm.pth, "
                                           "the ImageNet-22k Swin-B) into the backend")
        encoder_row.addWidget(QLabel("Encoder"))
        encoder_row.addWidget(self.get_weights_button)
        tl.addLayout(encoder_row)
        tl.addWidget(self.config_combo)
        self.encoder_file = QgsFileWidget()
        self.encoder_file.setFilter("Checkpoints (*.pth *.pt *.bin *.safetensors)")
        self.encoder_file.setToolTip("Or a checkpoint file: used instead of the choice above")
        tl.addWidget(self.encoder_file)
        self.finetune_button = QPushButton("Fine-tune")
        tl.addWidget(self.finetune_button)
        return box

    def _training_options(self) -> QHBoxLayout:
        options = QHBoxLayout()
        self.config_combo = QComboBox()  # the encoder: installed weights, then random init
        self._encoder_chosen = False  # by the user: a refresh keeps it; else the best default
        self.config_combo.activated.connect(lambda _i: setattr(self, "_encoder_chosen", True))
        self.set_encoders([], cpu_only=True)
        self.config_combo.setToolTip("The encoder to fine-tune: pretrained weights the backend "
                                     "has (Get weights…), or a randomly initialised Swin")
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 500)
        self.epochs_spin.setValue(30)
        self.epochs_spin.setPrefix("epochs ")
        self.quick_check = QCheckBox("quick")
        self.quick_check.setToolTip(
            "Train no network: a linear classifier on the encoder's features, seconds to a "
            "minute on a laptop. The full fine-tune (unchecked) trains a decoder: slower, "
            "usually more accurate. The report of either shows the other's scores beside it.")
        self.quick_check.toggled.connect(lambda quick: self.epochs_spin.setEnabled(not quick))
        options.addWidget(self.quick_check)
        options.addStretch(1)
        options.addWidget(self.epochs_spin)
        return options

    def _jobs_box(self, layout: QVBoxLayout) -> None:
        layout.addWidget(QLabel("Jobs"))
        self.jobs = QTreeWidget()
        self.jobs.setHeaderLabels(["job", "state", "progress"])
        self.jobs.setRootIsDecorated(False)
        self.jobs.setMinimumHeight(120)
        layout.addWidget(self.jobs, 1)
        job_buttons = QHBoxLayout()
        self.cancel_button = QPushButton("Cancel selected job")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Resume an interrupted pretraining job from its checkpoint")
        job_buttons.addWidget(self.cancel_button, 1)
        job_buttons.addWidget(self.resume_button)
        layout.addLayout(job_buttons)

    # -- views the controller updates ---------------------------------------------
    def _layers_changed(self, _layers) -> None:
        self.refresh_training_rasters()

    def refresh_training_rasters(self) -> None:
        """Every raster layer of the project, the checked ones kept checked."""
        checked = set(self.training_rasters.checkedItemsData())
        self.training_rasters.clear()
        rasters = [layer for layer in QgsProject.instance().mapLayers().values()
                   if isinstance(layer, QgsRasterLayer)]
        for layer in sorted(rasters, key=lambda la: la.name().lower()):
            self.training_rasters.addItemWithCheckState(
                layer.name(), Qt.CheckState.Checked if layer.id() in checked else Qt.CheckState.Unchecked,
                layer.id())

    def chosen_training_rasters(self) -> list[QgsRasterLayer]:
        """The checked rasters; none checked: the Classify raster."""
        project = QgsProject.instance()
        layers = [project.mapLayer(i) for i in self.training_rasters.checkedItemsData()]
        layers = [la for la in layers if isinstance(la, QgsRasterLayer)]
        current = self.raster_combo.currentLayer()
        return layers or ([current] if current is not None else [])

    def set_outputs_folder(self, folder: str) -> None:
        self.outputs_label.setText(f"Outputs: {folder}")
        self.outputs_label.setToolTip("Labels, models and results are written here (beside the "
                                      "project when it is saved; else the folder in Settings)")

    def set_status(self, text: str, ok: bool, where: str = "") -> None:
        """One short line (errors in red); where the backend is goes in the tooltip, so a
        long URL never wraps over the dock."""
        self.status.setText(text)
        self.status.setToolTip(f"{text}\n{where}" if where else text)
        self.status.setStyleSheet("" if ok else "color: #b00020;")

    def set_models(self, models: list[dict]) -> None:
        """Classification models here, change models in the change group."""
        self.change.set_models(models)
        current = self.model_combo.currentData()
        self.model_combo.clear()
        for m in (m for m in models if not is_change_model(m)):
            spec = m.get("model") or m.get("model_json") or {}
            label = spec.get("name") or m.get("name") or m.get("path")
            self.model_combo.addItem(str(label), m)
        idx = max(0, self.model_combo.findData(current)) if current else 0
        self.model_combo.setCurrentIndex(idx)
        self.show_classes()

    def set_encoders(self, installed: list[dict], cpu_only: bool) -> None:
        """Installed weights by what they are, then the random-init shapes; the best default."""
        from .encoders import choices

        current = self.config_combo.currentData() if self._encoder_chosen else None
        items, default = choices(installed, cpu_only)
        self.config_combo.clear()
        for text, data in items:
            self.config_combo.addItem(text, data)
        index = self.config_combo.findData(current) if current else -1
        self.config_combo.setCurrentIndex(index if index >= 0 else default)

    def encoder_params(self) -> dict:
        """The fine-tune params the encoder choice gives (`encoder` or `config`)."""
        path = self.encoder_file.filePath().strip()
        if path:
            return {"encoder": path}
        kind, _, value = (self.config_combo.currentData() or "config:tiny").partition(":")
        return {"encoder": value} if kind == "weights" else {"config": value}

    def current_model(self) -> dict | None:
        return self.model_combo.currentData()

    def show_classes(self) -> None:
        self.class_list.clear()
        model = self.current_model() or {}
        spec = model.get("model") or model.get("model_json") or {}
        for c in spec.get("classes", []):
            item = QListWidgetItem(color_icon(c.get("color", "#999999")), c.get("name", ""))
            self.class_list.addItem(item)

    def job_row(self, job_id: str, title: str) -> None:
        """A row with a progress bar for the job (once per job)."""
        if job_id in self._job_items:
            return
        item = QTreeWidgetItem([title, "queued", ""])
        item.setData(0, Qt.ItemDataRole.UserRole, job_id)
        bar = QProgressBar()
        bar.setRange(0, 100)
        self.jobs.insertTopLevelItem(0, item)
        self.jobs.setItemWidget(item, 2, bar)
        self._job_items[job_id] = (item, bar)

    def rekey_job(self, old: str, new: str) -> None:
        """A row made before its job had an id (an upload to a remote backend) takes the id."""
        if old in self._job_items and new not in self._job_items:
            item, bar = self._job_items.pop(old)
            item.setData(0, Qt.ItemDataRole.UserRole, new)
            self._job_items[new] = (item, bar)

    def update_job(self, job_id: str, state: str, progress: float, message: str = "") -> None:
        if job_id not in self._job_items:
            return
        item, bar = self._job_items[job_id]
        item.setText(1, state)
        item.setToolTip(0, message)
        bar.setValue(int(round(100 * progress)))

    def selected_job(self) -> str | None:
        item = self.jobs.currentItem()
        return None if item is None else item.data(0, Qt.ItemDataRole.UserRole)
