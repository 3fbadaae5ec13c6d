"""Pretrain dialog: a folder of imagery -> GeoPile -> GFM continual pretraining."""

from __future__ import annotations

from dataclasses import dataclass

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QSpinBox,
    QVBoxLayout,
)


@dataclass
class PretrainRequest:
    src_folder: str
    pile_dir: str
    out: str
    teacher: str
    config: str
    epochs: int


class PretrainDialog(QDialog):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("GFM continual pretraining")
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.src = QgsFileWidget()
        self.src.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.pile = QgsFileWidget()
        self.pile.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.out = QgsFileWidget()
        self.out.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.teacher = QgsFileWidget()
        self.teacher.setFilter("Checkpoints (*.pth *.pt *.bin *.safetensors)")
        self.config = QComboBox()
        self.config.addItems(["base", "tiny"])
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(100)
        form.addRow("Imagery folder", self.src)
        form.addRow("GeoPile folder (built here)", self.pile)
        form.addRow("Run folder", self.out)
        form.addRow("Teacher (ImageNet-22k Swin; empty: MIM only)", self.teacher)
        form.addRow("Model", self.config)
        form.addRow("Epochs", self.epochs)
        layout.addLayout(form)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def request(self) -> PretrainRequest:
        return PretrainRequest(
            src_folder=self.src.filePath(), pile_dir=self.pile.filePath(),
            out=self.out.filePath(), teacher=self.teacher.filePath() or "none",
            config=self.config.currentText(), epochs=self.epochs.value(),
        )
