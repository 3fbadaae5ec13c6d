"""The plugin object QGIS loads: adds (and on unload removes) the GFM menu entry.

The dock, Processing provider and backend client come with the plugin's own work; this
is the minimal shell that loads and unloads cleanly.
"""

from __future__ import annotations

from pathlib import Path

from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

MENU = "&GFM"
ICON = Path(__file__).resolve().parent / "icon.svg"
if not ICON.exists():  # running from the source tree, not the built plugin zip
    ICON = Path(__file__).resolve().parents[1] / "resources" / "icon.svg"


class GfmPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.actions: list[QAction] = []

    def initGui(self) -> None:  # noqa: N802 (QGIS API name)
        action = QAction(QIcon(str(ICON)), "About GFM", self.iface.mainWindow())
        action.triggered.connect(self._about)
        self.iface.addPluginToRasterMenu(MENU, action)
        self.actions.append(action)

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            action.deleteLater()
        self.actions.clear()

    def _about(self) -> None:
        self.iface.messageBar().pushInfo(
            "GFM", "Run the backend with `gfm serve`; Classify layer and Fine-tune come next."
        )
