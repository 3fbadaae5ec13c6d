"""The dock's "where to label next" rows: ask for suggestions, then step through them."""

from __future__ import annotations

from qgis.PyQt.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget


class SuggestRow(QWidget):
    """Suggest where to label (how many), then ◀ ▶ through the suggestions, the current
    one's rank and the classes the model hesitates between on a line below."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        rows = QVBoxLayout(self)
        rows.setContentsMargins(0, 0, 0, 0)
        ask = QHBoxLayout()
        self.suggest_button = QPushButton("Suggest where to label")
        self.suggest_button.setToolTip(
            "Squares on the Classify raster where the selected model is least sure and that "
            "look unlike the polygons already drawn: draw there, then Fine-tune again")
        self.count_spin = QSpinBox()
        self.count_spin.setRange(1, 200)
        self.count_spin.setValue(20)
        self.count_spin.setToolTip("How many places to suggest")
        ask.addWidget(self.suggest_button, 1)
        ask.addWidget(self.count_spin)
        rows.addLayout(ask)
        step = QHBoxLayout()
        self.prev_button = QPushButton("◀")
        self.next_button = QPushButton("▶")
        self.prev_button.setToolTip("Zoom to the previous suggestion")
        self.next_button.setToolTip("Zoom to the next suggestion")
        self.position = QLabel("no suggestions yet")
        self.position.setWordWrap(True)
        step.addWidget(self.prev_button)
        step.addWidget(self.position, 1)
        step.addWidget(self.next_button)
        rows.addLayout(step)
        self.set_stepping(False)

    def set_stepping(self, enabled: bool) -> None:
        self.prev_button.setEnabled(enabled)
        self.next_button.setEnabled(enabled)
