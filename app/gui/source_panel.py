"""Source and model choosers: what to run. Emits raw URIs; displays only redacted text."""

from __future__ import annotations

from dataclasses import dataclass

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QWidget,
)

DEMO_SOURCE = "synthetic:"
BROWSE = "\x00browse"  # item data of the "Checkpoint file…" entry


@dataclass(frozen=True)
class Choice:
    value: str  # raw value handed to the engine
    text: str  # what the user sees (redacted)


class SourcePanel(QWidget):
    source_chosen = pyqtSignal(str)  # raw URI: a combo pick, an entered URL
    model_chosen = pyqtSignal(str)  # shipped name or checkpoint path
    browse_file_requested = pyqtSignal()
    browse_model_requested = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.sources = QComboBox()
        self.sources.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.sources.setMinimumContentsLength(18)
        self.sources.setToolTip("Camera, demo stream or a recent URL / file")
        self.url = QLineEdit()
        self.url.setPlaceholderText("rtsp://…  or  http(s)://…")
        self.url.setClearButtonEnabled(True)
        self.open_url = QPushButton("Open")
        self.open_file = QPushButton("File…")
        self.models = QComboBox()
        self.models.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.models.setMinimumContentsLength(18)

        url_row = QHBoxLayout()
        url_row.setContentsMargins(0, 0, 0, 0)
        url_row.addWidget(self.url, 1)
        url_row.addWidget(self.open_url)
        url_row.addWidget(self.open_file)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Source", self.sources)
        form.addRow("URL", url_row)
        form.addRow("Model", self.models)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

        self.sources.activated.connect(lambda i: self.source_chosen.emit(self.sources.itemData(i)))
        self.url.returnPressed.connect(self._emit_url)
        self.open_url.clicked.connect(self._emit_url)
        self.open_file.clicked.connect(self.browse_file_requested)
        self.models.activated.connect(self._model_activated)
        self._model_value = ""

    def set_sources(self, choices: list[Choice], current: str) -> None:
        _fill(self.sources, choices, current)

    def set_models(self, choices: list[Choice], current: str) -> None:
        self._model_value = current
        _fill(self.models, [*choices, Choice(BROWSE, "Checkpoint file…")], current)

    def current_source(self) -> str:
        return self.sources.currentData() or DEMO_SOURCE

    def current_model(self) -> str:
        return self._model_value

    def _emit_url(self) -> None:
        text = self.url.text().strip()
        if text:
            self.url.clear()  # typed credentials do not linger on screen
            self.source_chosen.emit(text)

    def _model_activated(self, index: int) -> None:
        value = self.models.itemData(index)
        if value == BROWSE:
            _select(self.models, self._model_value)  # the dialog decides; until then keep the old choice
            self.browse_model_requested.emit()
        else:
            self._model_value = value
            self.model_chosen.emit(value)


def _fill(combo: QComboBox, choices: list[Choice], current: str) -> None:
    combo.blockSignals(True)
    combo.clear()
    for choice in choices:
        combo.addItem(choice.text, choice.value)
        combo.setItemData(combo.count() - 1, choice.text, Qt.ItemDataRole.ToolTipRole)
    _select(combo, current)
    combo.blockSignals(False)


def _select(combo: QComboBox, value: str) -> None:
    index = combo.findData(value)
    if index >= 0:
        combo.setCurrentIndex(index)
