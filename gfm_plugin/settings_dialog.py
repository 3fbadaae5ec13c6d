"""Settings dialog: start a local backend with a given Python, or connect to URL + token."""

from __future__ import annotations

from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLineEdit,
    QRadioButton,
    QVBoxLayout,
)

from .settings import BackendSettings


class SettingsDialog(QDialog):
    def __init__(self, settings: BackendSettings, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("GFM backend")
        self.settings = settings
        layout = QVBoxLayout(self)
        self.local = QRadioButton("Start a local backend with this Python")
        self.remote = QRadioButton("Connect to a running backend (e.g. a GPU workstation)")
        form = QFormLayout()
        self.python = QLineEdit(settings.python)
        self.python.setPlaceholderText("…/.venv/bin/python (where `gfm` is installed)")
        self.state_dir = QLineEdit(settings.state_dir)
        self.models_dir = QLineEdit(settings.models_dir)
        self.models_dir.setPlaceholderText("where fine-tuned models are written")
        self.url = QLineEdit(settings.url)
        self.url.setPlaceholderText("http://127.0.0.1:8765")
        self.token = QLineEdit(settings.token)
        self.token.setEchoMode(QLineEdit.Password)
        form.addRow("Python", self.python)
        form.addRow("State folder", self.state_dir)
        form.addRow("Models folder", self.models_dir)
        form.addRow("URL", self.url)
        form.addRow("Token", self.token)
        layout.addWidget(self.local)
        layout.addWidget(self.remote)
        layout.addLayout(form)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        (self.remote if settings.mode == "remote" else self.local).setChecked(True)

    def result_settings(self) -> BackendSettings:
        return BackendSettings(
            mode="remote" if self.remote.isChecked() else "local",
            python=self.python.text().strip(), state_dir=self.state_dir.text().strip(),
            url=self.url.text().strip(), token=self.token.text().strip(),
            models_dir=self.models_dir.text().strip(),
        )
