"""The "GFM" Processing provider."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import ALGORITHMS

ICON = Path(__file__).resolve().parents[1] / "icon.svg"
if not ICON.exists():
    ICON = Path(__file__).resolve().parents[2] / "resources" / "icon.svg"


class GfmProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "gfm"

    def name(self) -> str:
        return "GFM"

    def longName(self) -> str:  # noqa: N802 (QGIS API)
        return "GFM geospatial foundation models"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def loadAlgorithms(self) -> None:  # noqa: N802 (QGIS API)
        for cls in ALGORITHMS:
            self.addAlgorithm(cls())
