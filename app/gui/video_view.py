"""The live video with the prediction overlay painted on top (and a keypoint model's hands and bodies)."""

from __future__ import annotations

from dataclasses import dataclass

from PyQt6.QtCore import QRect, QRectF, QSize, Qt
from PyQt6.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter, QPaintEvent, QPen
from PyQt6.QtWidgets import QSizePolicy, QWidget

from .keypoint_overlay import Keypoints, explanation, paint_keypoints

REC_COLOR = QColor(220, 30, 30)
STATUS_COLORS = {
    "idle": QColor(120, 120, 120),
    "connecting": QColor(230, 160, 30),
    "live": QColor(210, 40, 40),
    "stalled": QColor(230, 160, 30),
    "reconnecting": QColor(230, 160, 30),
    "ended": QColor(120, 120, 120),
    "error": QColor(170, 30, 30),
}

# A stream that no longer runs: the last frame is dimmed and this text written across it (the last
# prediction stays on top, fully opaque, so it can still be read over a busy picture).
OVER_TEXT = {"ended": "Stream ended", "stopped": "Stopped", "error": "Not running"}
DIM = QColor(0, 0, 0, 150)


@dataclass
class Recording:
    """The recording indicator: a countdown before a clip, then a red REC badge and frame."""

    label: str  # the label being recorded
    countdown: int = 0  # seconds left before recording starts; 0 while recording
    elapsed_s: float = 0.0  # seconds recorded so far
    length_s: float = 0.0  # seconds asked for


@dataclass
class Overlay:
    """What is written over the video."""

    label: str = ""
    score: float = 0.0
    status: str = "idle"
    source: str = ""  # redacted
    truth: str | None = None  # ground truth, when the source knows it
    keypoints: Keypoints | None = None  # a keypoint model's landmarks (frame pixels) and which parts decide


class VideoView(QWidget):
    """Paints the newest frame scaled to fit (aspect kept) and the overlay in screen pixels."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(320, 240)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.image: QImage | None = None
        self.overlay = Overlay()
        self.recording: Recording | None = None  # kept across frames until set_recording(None)
        self.frames_painted = 0

    def sizeHint(self) -> QSize:
        return QSize(800, 600)

    def show_frame(self, image: QImage, overlay: Overlay) -> None:
        self.image = image
        self.overlay = overlay
        self.update()

    def set_status(self, status: str) -> None:
        self.overlay.status = status
        self.update()

    def set_recording(self, recording: Recording | None) -> None:
        self.recording = recording
        self.update()

    def clear(self) -> None:
        self.image = None
        self.overlay = Overlay(status=self.overlay.status, source=self.overlay.source)
        self.update()

    @property
    def caption(self) -> str:
        """The text written across the last frame once the stream no longer runs ("" while it does)."""
        return OVER_TEXT.get(self.overlay.status, "") if self.image is not None else ""

    @property
    def explanation(self) -> str:
        """The line under the label naming the parts that drive a keypoint model's decision ("" otherwise)."""
        return explanation(self.overlay.keypoints)

    def snapshot(self) -> QImage | None:
        """The current frame at its own resolution with the overlay drawn on it."""
        if self.image is None:
            return None
        out = self.image.convertToFormat(QImage.Format.Format_RGB32)
        painter = QPainter(out)
        if self.overlay.keypoints is not None:
            paint_keypoints(painter, QRect(0, 0, out.width(), out.height()), out.size(), self.overlay.keypoints)
        paint_overlay(painter, QRect(0, 0, out.width(), out.height()), self.overlay)
        if self.recording is not None:
            paint_recording(painter, QRect(0, 0, out.width(), out.height()), self.recording)
        painter.end()
        return out

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(18, 18, 18))
        target = self.rect()
        if self.image is not None and not self.image.isNull():
            size = self.image.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRect(0, 0, size.width(), size.height())
            target.moveCenter(self.rect().center())
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
            painter.drawImage(target, self.image)
            self.frames_painted += 1
            if self.overlay.keypoints is not None:  # under the caption's dimming once the stream is over
                paint_keypoints(painter, target, self.image.size(), self.overlay.keypoints)
            if self.caption:
                painter.fillRect(target, DIM)
                font = _font(target, 0.07)
                metrics = QFontMetrics(font)
                width = metrics.horizontalAdvance(self.caption) + 2 * _pad(font)
                height = metrics.height() + 2 * _pad(font)
                center = target.center()
                _badge(
                    painter, center.x() - width // 2, center.y() - height // 2, self.caption, font, QColor(0, 0, 0, 200)
                )
        else:
            painter.setPen(QColor(170, 170, 170))
            painter.setFont(_font(self.rect(), 0.04, bold=False))
            text = {"connecting": "Connecting…", "error": "Not running"}.get(self.overlay.status, "No video")
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, text)
        paint_overlay(painter, target, self.overlay)
        if self.recording is not None:
            paint_recording(painter, target, self.recording)
        painter.end()


def paint_recording(painter: QPainter, rect: QRect, recording: Recording) -> None:
    """A big countdown in the middle, or a red frame round the video and a REC badge (bottom right)."""
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    margin = max(6, rect.height() // 40)
    if recording.countdown > 0:
        font = _font(rect, 0.25)
        metrics = QFontMetrics(font)
        text = str(recording.countdown)
        side = max(metrics.horizontalAdvance(text), metrics.height()) + 2 * _pad(font)
        box = QRectF(0, 0, side, side)
        box.moveCenter(QRectF(rect).center())
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(0, 0, 0, 150))
        painter.drawEllipse(box)
        painter.setPen(QColor(255, 255, 255))
        painter.setFont(font)
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
        small = _font(rect, 0.04)
        caption = _elide(f"get ready: {recording.label}", small, rect.width() - 2 * margin)
        width = QFontMetrics(small).horizontalAdvance(caption) + 2 * _pad(small)
        _badge(painter, int(box.center().x() - width / 2), int(box.bottom()) + margin, caption, small, REC_COLOR)
        return
    border = max(3, rect.height() // 120)
    pen = QPen(REC_COLOR, border)
    pen.setJoinStyle(Qt.PenJoinStyle.MiterJoin)
    painter.setPen(pen)
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.drawRect(QRectF(rect).adjusted(border / 2, border / 2, -border / 2, -border / 2))
    font = _font(rect, 0.045)
    text = f"● REC  {recording.label}  {recording.elapsed_s:.1f} / {recording.length_s:.1f} s"
    text = _elide(text, font, rect.width() * 3 // 4)
    width = QFontMetrics(font).horizontalAdvance(text) + 2 * _pad(font)
    height = QFontMetrics(font).height() + 2 * _pad(font)
    _badge(painter, rect.right() - margin - width, rect.bottom() - margin - height, text, font, REC_COLOR)


def paint_overlay(painter: QPainter, rect: QRect, overlay: Overlay) -> None:
    """Current action and confidence (top left) with the parts that drive it under them (a keypoint model),
    stream status (top right), source and truth (bottom)."""
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    margin = max(6, rect.height() // 40)
    if overlay.label:
        # the last prediction stays readable: faded while frames are late, marked "last" once the stream is over
        over = overlay.status in OVER_TEXT
        painter.setOpacity(1.0 if overlay.status == "live" or over else 0.75)
        text = f"{'last: ' if over else ''}{overlay.label}  {overlay.score * 100:.0f}%"
        font = _font(rect, 0.065)
        _badge(painter, rect.left() + margin, rect.top() + margin, text, font, QColor(0, 0, 0, 170))
        # a thin confidence bar under the label
        bar_w = QFontMetrics(font).horizontalAdvance(text) + 2 * _pad(font)
        bar = QRectF(rect.left() + margin, rect.top() + margin + QFontMetrics(font).height() + 2 * _pad(font), bar_w, 5)
        painter.fillRect(bar, QColor(0, 0, 0, 170))
        painter.fillRect(QRectF(bar.x(), bar.y(), bar.width() * max(0.0, min(1.0, overlay.score)), 5), _accent())
        why = explanation(overlay.keypoints)
        if why:
            small = _font(rect, 0.034, bold=False)
            why = _elide(why, small, rect.width() * 3 // 4)
            _badge(painter, rect.left() + margin, int(bar.bottom()) + margin // 2, why, small, QColor(0, 0, 0, 150))
        painter.setOpacity(1.0)
    status = overlay.status.upper()
    font = _font(rect, 0.04)
    width = QFontMetrics(font).horizontalAdvance("● " + status) + 2 * _pad(font)
    color = STATUS_COLORS.get(overlay.status, QColor(120, 120, 120))
    _badge(painter, rect.right() - margin - width, rect.top() + margin, "● " + status, font, color)
    small = _font(rect, 0.032, bold=False)
    lines = [s for s in (overlay.source, f"truth: {overlay.truth}" if overlay.truth else "") if s]
    y = rect.bottom() - margin
    for line in reversed(lines):
        y -= QFontMetrics(small).height() + 2 * _pad(small)
        text = _elide(line, small, rect.width() - 3 * margin)
        _badge(painter, rect.left() + margin, y, text, small, QColor(0, 0, 0, 150))
        y -= 4


def _badge(painter: QPainter, x: int, y: int, text: str, font: QFont, background: QColor) -> None:
    metrics = QFontMetrics(font)
    pad = _pad(font)
    box = QRectF(x, y, metrics.horizontalAdvance(text) + 2 * pad, metrics.height() + 2 * pad)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(background)
    painter.drawRoundedRect(box, pad, pad)
    painter.setPen(QColor(255, 255, 255))
    painter.setFont(font)
    painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)


def _font(rect: QRect, fraction: float, bold: bool = True) -> QFont:
    font = QFont()
    font.setPixelSize(max(11, int(rect.height() * fraction)))
    font.setBold(bold)
    return font


def _pad(font: QFont) -> int:
    return max(3, font.pixelSize() // 4)


def _elide(text: str, font: QFont, width: int) -> str:
    return QFontMetrics(font).elidedText(text, Qt.TextElideMode.ElideMiddle, max(40, width))


def _accent() -> QColor:
    return QColor(80, 200, 120)
