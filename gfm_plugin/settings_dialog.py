"""Settings dialog: start a local backend with a given Python, or connect to URL + token."""

from __future__ import annotations

from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
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
        self.python.setPlaceholderText("the backend's Python: Set up backend… makes one")
        self.setup_button = QPushButton("Set up backend…")
        self.setup_button.setToolTip("Install the backend that came with the plugin into a "
                                     "Python environment of its own")
        self.setup_button.clicked.connect(self.set_up)
        python_row = QHBoxLayout()
        python_row.addWidget(self.python, 1)
        python_row.addWidget(self.setup_button)
        self.state_dir = QLineEdit(settings.state_dir)
        self.models_dir = QLineEdit(settings.models_dir)
        self.models_dir.setPlaceholderText("where fine-tuned models are written")
        self.url = QLineEdit(settings.url)
        self.url.setPlaceholderText("http://127.0.0.1:8765")
        self.token = QLineEdit(settings.token)
        self.token.setEchoMode(QLineEdit.Password)
        form.addRow("Python", python_row)
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

    def set_up(self) -> None:
        from .setup_dialog import SetupDialog

        SetupDialog(self.state_dir.text().strip() or self.settings.state_dir,
                    self.python.setText, self).exec()

    def result_settings(self) -> BackendSettings:
        return BackendSettings(
            mode="remote" if self.remote.isChecked() else "local",
            python=self.python.text().strip(), state_dir=self.state_dir.text().strip(),
            url=self.url.text().strip(), token=self.token.text().strip(),
            models_dir=self.models_dir.text().strip(),
        )
