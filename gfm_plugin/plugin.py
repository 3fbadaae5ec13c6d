"""The plugin object QGIS loads: the GFM dock, its toolbar action and the Processing
provider; `unload` removes every one of them."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .controller import GfmController
from .dock import GfmDock
from .processing.provider import GfmProvider

MENU = "&GFM"
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
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.controller = GfmController(self.iface, self.dock)
        action = QAction(QIcon(str(ICON)), "GFM panel", self.iface.mainWindow())
        action.setCheckable(True)
        action.setChecked(True)
        action.toggled.connect(self.dock.setVisible)
        self.dock.visibilityChanged.connect(action.setChecked)  # closed with its X: unchecked
        QTimer.singleShot(0, self.controller.connect_at_startup)
        self.iface.addPluginToRasterMenu(MENU, action)
        self.iface.addToolBarIcon(action)
        self.actions.append(action)

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            self.iface.removeToolBarIcon(action)
            action.deleteLater()
        self.actions.clear()
        if self.dock is not None:
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        self.controller = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
