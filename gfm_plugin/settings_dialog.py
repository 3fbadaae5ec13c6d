"""Settings dialog: start a local backend with a given Python, or connect to URL + token."""

from __future__ import annotations

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
)

from .output_folders import default_root
from .settings import BackendSettings


def _path_widget(value: str, folder: bool, placeholder: str = "") -> QgsFileWidget:
    """A path field with its Browse button."""
    widget = QgsFileWidget()
    widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory if folder
                           else QgsFileWidget.StorageMode.GetFile)
    widget.setFilePath(value)
    widget.lineEdit().setPlaceholderText(placeholder)
    widget.lineEdit().setToolTip(placeholder)
    return widget


class SettingsDialog(QDialog):
    def __init__(self, settings: BackendSettings, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("GFM backend")
        self.setMinimumWidth(640)
        self.settings = settings
        layout = QVBoxLayout(self)
        self.local = QRadioButton("Start a local backend with this Python")
        self.remote = QRadioButton("Connect to a running backend (e.g. a GPU workstation)")
        layout.addWidget(self.local)
        layout.addWidget(self.remote)
        layout.addLayout(self._form(settings))
        self.test_result = QLabel("")
        self.test_result.setWordWrap(True)
        layout.addWidget(self.test_result)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        self.test_button = buttons.addButton("Test", QDialogButtonBox.ButtonRole.ActionRole)
        self.test_button.clicked.connect(self.test)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        (self.remote if settings.mode == "remote" else self.local).setChecked(True)
        self.local.toggled.connect(self._mode_changed)
        self._mode_changed()

    def _form(self, settings: BackendSettings) -> QFormLayout:
        form = QFormLayout()
        self.python = _path_widget(settings.python, folder=False,
                                   placeholder="the backend's Python: Set up backend… makes one")
        self.setup_button = QPushButton("Set up backend…")
        self.setup_button.setToolTip("Install the backend that came with the plugin into a "
                                     "Python environment of its own")
        self.setup_button.clicked.connect(self.set_up)
        python_row = QHBoxLayout()
        python_row.addWidget(self.python, 1)
        python_row.addWidget(self.setup_button)
        self.state_dir = _path_widget(settings.state_dir, folder=True)
        self.models_dir = _path_widget(settings.models_dir, folder=True,
                                       placeholder="default: models/ in the outputs folder")
        self.results_dir = _path_widget(settings.results_dir, folder=True,
                                        placeholder=f"default: {default_root()}")
        self.results_dir.setToolTip("Labels, models and results of an unsaved project go here; "
                                    "a saved project's go to gfm/ beside it")
        self.url = QLineEdit(settings.url)
        self.url.setPlaceholderText("http://127.0.0.1:8765")
        self.token = QLineEdit(settings.token)
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.fingerprint = QLineEdit(settings.fingerprint)
        self.fingerprint.setPlaceholderText("only for a self-signed certificate")
        self.fingerprint.setToolTip("The SHA-256 fingerprint of the server's HTTPS certificate "
                                    "(gfm serve logs it): pinned, so no other certificate is "
                                    "accepted")
        form.addRow("Python", python_row)
        form.addRow("State folder", self.state_dir)
        form.addRow("Models folder", self.models_dir)
        form.addRow("Outputs folder", self.results_dir)
        form.addRow("URL", self.url)
        form.addRow("Token", self.token)
        form.addRow("Certificate SHA-256", self.fingerprint)
        return form

    def _mode_changed(self) -> None:
        local = self.local.isChecked()
        for widget in (self.python, self.setup_button, self.state_dir):
            widget.setEnabled(local)
        for widget in (self.url, self.token, self.fingerprint):
            widget.setEnabled(not local)
        self.test_result.clear()  # a result of the other mode's settings would mislead

    def test(self) -> None:
        """Try the settings as they stand: connect (a local backend is not started)."""
        from .client import BackendError
        from .connection import describe, get_client

        try:
            client = get_client(self.result_settings(), start=False)
            self.test_result.setText(f"{describe(client)} at {client.connection.url}")
            self.test_result.setStyleSheet("")
        except BackendError as exc:
            self.test_result.setText(str(exc))
            self.test_result.setStyleSheet("color: #b00020;")

    def set_up(self) -> None:
        from .setup_dialog import SetupDialog

        SetupDialog(self.state_dir.filePath().strip() or self.settings.state_dir,
                    self.python.setFilePath, self).exec()

    def result_settings(self) -> BackendSettings:
        return BackendSettings(
            mode="remote" if self.remote.isChecked() else "local",
            python=self.python.filePath().strip(), state_dir=self.state_dir.filePath().strip(),
            url=self.url.text().strip(), token=self.token.text().strip(),
            fingerprint=self.fingerprint.text().strip(),
            models_dir=self.models_dir.filePath().strip(),
            results_dir=self.results_dir.filePath().strip(),
            authcfg=self.settings.authcfg,  # the token's configuration is updated, not copied
        )
