"""Get weights: the backend's weights store and catalog; download, import, remove.

Downloads and imports are backend jobs (`weights`, `weights-import`), so a remote backend
fetches its own and the dock's Jobs list shows their progress; entries published only on
a web page (gfm.pth on OneDrive) open that page, and Import takes the downloaded file.
"""

from __future__ import annotations

from collections.abc import Callable

from qgis.PyQt.QtCore import Qt, QUrl
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
)

from .client import BackendClient, BackendError

RunJob = Callable[[str, str, dict, Callable[[dict], None]], object]


def _size(record: dict) -> str:
    size = record.get("size")
    return f"{size / 1e6:,.0f} MB" if size else "not published"


class WeightsDialog(QDialog):
    def __init__(self, client: BackendClient, run_job: RunJob, on_change: Callable[[], None],
                 parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("GFM weights")
        self.resize(820, 420)
        self.client, self.run_job, self.on_change = client, run_job, on_change
        layout = QVBoxLayout(self)
        self.where = QLabel("")
        self.where.setWordWrap(True)
        layout.addWidget(self.where)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["name", "what", "size", "status"])
        self.tree.setRootIsDecorated(False)
        self.tree.setColumnWidth(0, 140)
        self.tree.setColumnWidth(1, 400)
        self.tree.setColumnWidth(2, 120)
        layout.addWidget(self.tree, 1)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        row = QHBoxLayout()
        self.download_button = QPushButton("Download")
        self.page_button = QPushButton("Open download page")
        self.import_button = QPushButton("Import file…")
        self.remove_button = QPushButton("Remove")
        close = QPushButton("Close")
        for button in (self.download_button, self.page_button, self.import_button,
                       self.remove_button, close):
            row.addWidget(button)
        layout.addLayout(row)
        self.tree.currentItemChanged.connect(lambda *_: self._selected())
        self.download_button.clicked.connect(self.download)
        self.page_button.clicked.connect(self.open_page)
        self.import_button.clicked.connect(self.import_file)
        self.remove_button.clicked.connect(self.remove)
        close.clicked.connect(self.close)
        self.refresh()

    def refresh(self) -> None:
        try:
            listing = self.client.weights()
        except BackendError as exc:
            self.where.setText(f"weights not available: {exc}")
            return
        self.where.setText(f"Weights of the backend at {self.client.connection.url}, kept in "
                           f"{listing['store']}")
        self.tree.clear()
        installed = {r.get("catalog") for r in listing["installed"]} | {
            r["name"] for r in listing["installed"]}  # a name taken hides its catalog row
        for record in listing["installed"]:
            self._add(record["name"], record.get("title") or record.get("what", ""),
                      _size(record), "installed", {"installed": record})
        for entry in listing["catalog"]:
            if entry["name"] not in installed:
                status = "download" if entry.get("url") else "web page, then Import"
                self._add(entry["name"], entry["title"], _size(entry), status, {"catalog": entry})
        self._selected()

    def _add(self, name: str, what: str, size: str, status: str, data: dict) -> None:
        item = QTreeWidgetItem([name, what, size, status])
        item.setData(0, Qt.ItemDataRole.UserRole, data)
        self.tree.addTopLevelItem(item)

    def _current(self) -> dict:
        item = self.tree.currentItem()
        return item.data(0, Qt.ItemDataRole.UserRole) if item is not None else {}

    def _selected(self) -> None:
        data = self._current()
        entry, record = data.get("catalog"), data.get("installed")
        self.download_button.setEnabled(bool(entry and entry.get("url")))
        self.page_button.setEnabled(bool(entry))
        self.remove_button.setEnabled(bool(record))
        if entry:
            self.note.setText(f"{entry['title']}. Licence: {entry['licence']}. Cite: "
                              f"{entry['citation']}. Published at {entry['page']}")
        elif record:
            self.note.setText(f"{record['what']} ({record.get('shape', '')}); SHA-256 "
                              f"{record['sha256']}; source: {record['source']}")
        else:
            self.note.setText("")

    def download(self) -> None:
        entry = self._current().get("catalog")
        if entry:
            self.run_job(f"Weights {entry['name']}", "weights", {"source": entry["name"]},
                         lambda _info: self._changed())

    def open_page(self) -> None:
        entry = self._current().get("catalog")
        if entry:
            QDesktopServices.openUrl(QUrl(entry["page"]))

    def import_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import weights", "",
                                              "Checkpoints (*.pth *.pt *.bin *.safetensors)")
        if path:
            self.run_job("Import weights", "weights-import", {"file": path},
                         lambda _info: self._changed())

    def remove(self) -> None:
        record = self._current().get("installed")
        if record:
            try:
                self.client.remove_weights(record["name"])
            except BackendError as exc:
                self.note.setText(str(exc))
                return
            self._changed()

    def _changed(self) -> None:
        self.refresh()
        self.on_change()
