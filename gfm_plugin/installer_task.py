"""Set up backend inside QGIS: the installer in a QgsTask, its log and progress shown live."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .installer import Installer, InstallError


class InstallerTask(QgsTask):
    """Runs `Installer.run()` off the GUI thread; `line` and `step` reach the GUI queued."""

    line = pyqtSignal(str)
    step = pyqtSignal(float, str)

    def __init__(self, venv: Path, python: str | None = None) -> None:
        super().__init__("Set up GFM backend", QgsTask.Flag.CanCancel)
        self.installer = Installer(venv=venv, python=python or None, log=self.line.emit,
                                   progress=self._progress)
        self.summary: dict = {}
        self.error: str | None = None

    def _progress(self, fraction: float, message: str) -> None:
        self.setProgress(100.0 * fraction)
        self.step.emit(fraction, message)

    def run(self) -> bool:  # worker thread
        try:
            self.summary = self.installer.run()
        except InstallError as exc:
            self.error = "\n".join([str(exc), *exc.tail[-8:]])
            return False
        except Exception as exc:  # anything else still ends the task with a message
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        return True

    def cancel(self) -> None:
        self.installer.cancel()
        super().cancel()
