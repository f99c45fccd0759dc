"""Top-k class probabilities as horizontal bars."""

from __future__ import annotations

from PyQt6.QtCore import QRectF, QSize, Qt
from PyQt6.QtGui import QColor, QFontMetrics, QPainter, QPaintEvent
from PyQt6.QtWidgets import QSizePolicy, QWidget

ROW_HEIGHT = 24


class TopBars(QWidget):
    """``set_top([[label, p], ...])`` shows the first ``k`` rows, best first.

    A model with fewer than ``k`` classes gets one bar per class, never empty tracks: the number of bars
    (:attr:`count`) follows the length of the last non-empty ``top`` (or :meth:`set_classes`).
    """

    def __init__(self, k: int = 5, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.k = k
        self.count = k  # bars drawn: min(k, number of classes) once known
        self.rows: list[tuple[str, float]] = []
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumHeight(self.count * ROW_HEIGHT + 4)

    def sizeHint(self) -> QSize:
        return QSize(260, self.count * ROW_HEIGHT + 4)

    def set_classes(self, classes: int) -> None:
        """The model has ``classes`` classes: draw min(k, classes) bars."""
        count = max(1, min(self.k, int(classes)))
        if count != self.count:
            self.count = count
            self.setMinimumHeight(count * ROW_HEIGHT + 4)
            self.updateGeometry()
        self.update()

    def set_top(self, top: list) -> None:
        self.rows = [(str(label), float(p)) for label, p in list(top)[: self.k]]
        if self.rows:  # the engine sends min(k, classes) rows: that is how many the model has
            self.set_classes(len(self.rows))
        self.update()

    def clear(self) -> None:
        self.set_top([])

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        metrics = QFontMetrics(self.font())
        label_w = min(self.width() // 2, max([metrics.horizontalAdvance(label) for label, _ in self.rows] + [60]) + 8)
        pct_w = metrics.horizontalAdvance("100%") + 6
        bar_w = max(10, self.width() - label_w - pct_w)
        for i in range(self.count):
            y = 2 + i * ROW_HEIGHT
            track = QRectF(label_w, y + 4, bar_w, ROW_HEIGHT - 8)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(palette.color(palette.ColorRole.Mid).lighter(130))
            painter.drawRoundedRect(track, 3, 3)
            if i >= len(self.rows):
                continue
            label, p = self.rows[i]
            painter.setBrush(QColor(80, 200, 120) if i == 0 else QColor(90, 140, 210))
            filled = track.width() * max(0.0, min(1.0, p))
            painter.drawRoundedRect(QRectF(track.x(), track.y(), filled, track.height()), 3, 3)
            painter.setPen(palette.color(palette.ColorRole.WindowText))
            text = metrics.elidedText(label, Qt.TextElideMode.ElideRight, label_w - 8)
            align = Qt.AlignmentFlag.AlignVCenter
            painter.drawText(QRectF(0, y, label_w - 6, ROW_HEIGHT), align | Qt.AlignmentFlag.AlignLeft, text)
            painter.drawText(
                QRectF(label_w + bar_w, y, pct_w, ROW_HEIGHT), align | Qt.AlignmentFlag.AlignRight, f"{p * 100:.0f}%"
            )
        painter.end()
