"""The plugin object QGIS loads: the GFM dock, its toolbar action and the Processing
provider; `unload` removes every one of them."""

from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .controller import POLL_S, GfmController
from .dock import GfmDock
from .processing.provider import GfmProvider

MENU = "&GFM"
if hasattr(Qgis, "LayerType"):  # QGIS 3.30 and newer (QGIS 4 has only this)
    RASTER_LAYER = Qgis.LayerType.Raster
else:
    from qgis.core import QgsMapLayerType

    RASTER_LAYER = QgsMapLayerType.RasterLayer
ICON = Path(__file__).resolve().parent / "icon.svg"
if not ICON.exists():  # running from the source tree, not the built plugin zip
    ICON = Path(__file__).resolve().parents[1] / "resources" / "icon.svg"


class GfmPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.actions: list[QAction] = []
        self.dock: GfmDock | None = None
        self.controller: GfmController | None = None
        self.provider: GfmProvider | None = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS API name)
        if self.provider is None:
            self.provider = GfmProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 (QGIS API name)
        self.initProcessing()
        self.dock = GfmDock(self.iface.mainWindow())
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.controller = GfmController(self.iface, self.dock)
        panel = self._action("GFM panel", None, icon=True)
        panel.setCheckable(True)
        panel.setChecked(True)
        panel.toggled.connect(self.dock.setVisible)
        self.dock.visibilityChanged.connect(panel.setChecked)  # closed with its X: unchecked
        self.iface.addToolBarIcon(panel)
        c = self.controller
        for text, slot in (("Classify layer", c.classify_current), ("Fine-tune", c.finetune_current),
                           ("New training-labels layer", c.new_labels_layer),
                           ("Detect changes", c.change.detect),
                           ("Fine-tune for changes", c.change.finetune),
                           ("New change-labels layer", c.change.new_labels_layer),
                           ("Pretrain…", c.open_pretrain_dialog), ("Get weights…", c.open_weights),
                           ("Set up backend…", c.open_setup), ("Settings…", c.edit_settings)):
            self._action(text, slot)
        self._layer_menu_action()
        QTimer.singleShot(0, c.connect_at_startup)
        self.timer = QTimer(self.dock)
        self.timer.timeout.connect(c.check_backend)
        self.timer.start(POLL_S * 1000)
        project = QgsProject.instance()
        project.homePathChanged.connect(c.show_outputs_folder)

    def _action(self, text: str, slot, icon: bool = False) -> QAction:
        """An entry under Raster > GFM (every action the dock has)."""
        action = QAction(QIcon(str(ICON)) if icon else QIcon(), text, self.iface.mainWindow())
        if slot is not None:
            action.triggered.connect(lambda _checked=False: self._show_dock_and(slot))
        self.iface.addPluginToRasterMenu(MENU, action)
        self.actions.append(action)
        return action

    def _show_dock_and(self, slot) -> None:
        if self.dock is not None:
            self.dock.show()
        slot()

    def _layer_menu_action(self) -> None:
        """"Classify with GFM" and "Detect changes with GFM" on a raster layer's context
        menu in the Layers panel (the layer is the later date of the pair)."""
        self.layer_actions = []
        for text, slot in (("Classify with GFM", self.classify_active_layer),
                           ("Detect changes with GFM (as the later date)", self.detect_active_layer)):
            action = QAction(QIcon(str(ICON)), text, self.iface.mainWindow())
            action.triggered.connect(slot)
            self.iface.addCustomActionForLayerType(action, "", RASTER_LAYER, True)
            self.layer_actions.append(action)

    def detect_active_layer(self) -> None:
        layer = self.iface.activeLayer()
        if self.dock is None or self.controller is None or not isinstance(layer, QgsRasterLayer):
            return
        self.dock.show()
        self.controller.change.detect(after_layer=layer)

    def classify_active_layer(self) -> None:
        layer = self.iface.activeLayer()
        if self.dock is None or self.controller is None or not isinstance(layer, QgsRasterLayer):
            return
        self.dock.show()
        self.dock.raster_combo.setLayer(layer)
        self.controller.classify_current()

    def unload(self) -> None:
        if getattr(self, "timer", None) is not None:
            self.timer.stop()
        for action in getattr(self, "layer_actions", []):
            self.iface.removeCustomActionForLayerType(action)
            action.deleteLater()
        self.layer_actions = []
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            self.iface.removeToolBarIcon(action)
            action.deleteLater()
        self.actions.clear()
        if self.dock is not None:
            if self.controller is not None:
                QgsProject.instance().homePathChanged.disconnect(self.controller.show_outputs_folder)
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        self.controller = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
