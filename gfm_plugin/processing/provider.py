"""The "GFM" Processing provider."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from . import declared
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
        if not declared.KNOWN_MODELS:
            declared.KNOWN_MODELS.update(_backend_models())
        for cls in ALGORITHMS:
            self.addAlgorithm(cls())


def _backend_models() -> dict[str, list[str]]:
    """The models of a local backend that is running now (never started for this: QGIS
    is loading its providers). A remote backend's come when the dock connects."""
    from qgis.core import QgsSettings

    from ..backend_process import find_running
    from ..client import BackendError
    from ..settings import PREFIX, default_state_dir

    settings = QgsSettings()
    if settings.value(PREFIX + "mode", "local") != "local":
        return {}
    client = find_running(settings.value(PREFIX + "state_dir", "") or default_state_dir())
    try:
        return declared.model_choices(client.models()) if client is not None else {}
    except BackendError:
        return {}


def offer_models(models: list[dict]) -> None:
    """The dock listed the backend's models: Processing offers the same ones."""
    from qgis.core import QgsApplication

    choices = declared.model_choices(models)
    if choices == declared.KNOWN_MODELS:
        return
    declared.KNOWN_MODELS.clear()
    declared.KNOWN_MODELS.update(choices)
    provider = QgsApplication.processingRegistry().providerById("gfm")
    if provider is not None:
        provider.refreshAlgorithms()
