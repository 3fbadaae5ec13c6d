"""What the plugin says in QGIS's message bar: one GFM error at a time, never a pile."""

from __future__ import annotations

from qgis.core import Qgis

TITLE = "GFM"
INFO_S = 8
WARNING_S = 20


class Messages:
    def __init__(self, iface, parent=None) -> None:
        self.iface = iface
        self.parent = parent

    def _bar(self):
        return self.iface.messageBar()

    def info(self, text: str) -> None:
        self._bar().pushMessage(TITLE, text, level=Qgis.MessageLevel.Info, duration=INFO_S)

    def warn(self, text: str) -> None:
        self._bar().pushMessage(TITLE, text, level=Qgis.MessageLevel.Warning, duration=WARNING_S)

    def error(self, text: str) -> None:
        """Stays until closed, replacing the previous GFM error (the job's row keeps each)."""
        self._clear(Qgis.MessageLevel.Critical)
        self._bar().pushMessage(TITLE, text, level=Qgis.MessageLevel.Critical, duration=0)

    def show_warnings(self, title: str, info: dict) -> None:
        """The backend's warnings (pixel-size mismatch, no validation polygons) reach the user."""
        for warning in (info.get("outputs") or {}).get("warnings") or []:
            self.warn(f"{title}: {warning}")

    def confirm(self, text: str) -> bool:
        """Ask before replacing something; the backend never replaces without being told."""
        from qgis.PyQt.QtWidgets import QMessageBox

        yes, no = QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No
        return QMessageBox.question(self.parent, TITLE, text, yes | no, no) == yes

    def _clear(self, level) -> None:
        bar = self._bar()
        try:
            items = list(bar.items())
        except TypeError:  # a stand-in message bar (tests) lists nothing
            return
        for item in items:
            if item.title() == TITLE and item.level() == level:
                bar.popWidget(item)
