"""The Set up backend window: where the venv goes, a progress bar, the installer's log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qgis.core import QgsApplication
from qgis.PyQt.QtWidgets import (
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from .installer import InstallError, default_venv_dir
from .installer_task import InstallerTask


class SetupDialog(QDialog):
    """Runs the installer; `on_installed(python)` is called once the backend is ready."""

    def __init__(self, state_dir: str, on_installed: Callable[[str], None], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Set up GFM backend")
        self.resize(720, 460)
        self.on_installed = on_installed
        self.task: InstallerTask | None = None
        layout = QVBoxLayout(self)
        intro = QLabel("Creates a Python environment of its own for the GFM backend (QGIS's "
                       "Python is not touched) and installs the backend that came with the "
                       "plugin, with torch built for this machine.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.venv = QLineEdit(str(default_venv_dir(state_dir)))
        self.python = QLineEdit()
        self.python.setPlaceholderText("found automatically (Python 3.10 or newer)")
        form.addRow("Install into", self.venv)
        form.addRow("Base Python", self.python)
        layout.addLayout(form)
        self.step = QLabel("")
        self.bar = QProgressBar()
        self.bar.setRange(0, 100)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        layout.addWidget(self.step)
        layout.addWidget(self.bar)
        layout.addWidget(self.log, 1)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Set up")
        self.cancel_button = QPushButton("Cancel")
        self.close_button = QPushButton("Close")
        self.cancel_button.setEnabled(False)
        for button in (self.start_button, self.cancel_button, self.close_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.close)

    def start(self) -> None:
        try:
            self.task = InstallerTask(Path(self.venv.text().strip()), self.python.text().strip())
        except InstallError as exc:  # e.g. a plugin copy without its bundled backend
            self.step.setText("failed")
            self.log.appendPlainText(str(exc))
            return
        self.task.line.connect(self.log.appendPlainText)
        self.task.step.connect(self._step)
        self.task.taskCompleted.connect(self._completed)
        self.task.taskTerminated.connect(self._terminated)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        QgsApplication.taskManager().addTask(self.task)

    def _step(self, fraction: float, message: str) -> None:
        self.bar.setValue(int(round(100 * fraction)))
        self.step.setText(message)

    def cancel(self) -> None:
        if self.task is not None:
            self.step.setText("cancelling…")
            self.task.cancel()

    def _completed(self) -> None:
        assert self.task is not None
        self._step(1.0, f"ready: {self.task.summary.get('python')}")
        self._idle()
        self.on_installed(self.task.summary["python"])

    def _terminated(self) -> None:
        error = self.task.error if self.task is not None else None
        self.step.setText("stopped" if not error else "failed")
        self.step.setStyleSheet("color: #b00020;")
        if error:
            self.log.appendPlainText("\n" + error)
        self._idle()

    def _idle(self) -> None:
        self.start_button.setEnabled(True)
        self.start_button.setText("Run again")
        self.cancel_button.setEnabled(False)
