"""Hands and bodies drawn over the video: what a keypoint model found, and which parts drive its decision.

:class:`Keypoints` is the window's own copy of one frame's landmarks (made by :mod:`.worker` on the engine
thread: plain arrays in the displayed frame's pixels, no engine object crosses to the GUI thread).
:func:`paint_keypoints` draws it: the body's skeleton along MediaPipe's pose connections (joints with
visibility < ``MIN_VISIBILITY`` left out), each hand's 21 points and finger lines, the tracked regions as
thin rotated squares, and the joints of the part that drives the decision most, larger and coloured by
its sign. :func:`explanation` is the line written under the label: "fall: left leg +42%, torso +20%".
With several people followed (``dcrn gui --people N``), each person's own decision is written above their
head ("#3 fall 92%"), so the window answers who did what.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PyQt6.QtCore import QLineF, QPointF, QRect, QSize, Qt
from PyQt6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPen, QPolygonF

MIN_VISIBILITY = 0.5  # body landmarks less visible than this are not drawn
EXPLAINED_PARTS = 4  # parts named in the explanation line

POSE_CONNECTIONS = (  # MediaPipe's POSE_CONNECTIONS: face, arms and hands, torso, legs and feet
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10),
    (11, 12), (11, 13), (13, 15), (15, 17), (15, 19), (15, 21), (17, 19),
    (12, 14), (14, 16), (16, 18), (16, 20), (16, 22), (18, 20),
    (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28), (27, 29), (28, 30), (29, 31), (30, 32),
    (27, 31), (28, 32),
)  # fmt: skip
HAND_CONNECTIONS = (  # MediaPipe's HAND_CONNECTIONS: wrist to each finger's base, base to tip, across the palm
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11), (11, 12),
    (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19), (19, 20),
)  # fmt: skip

# which landmarks a part of the explanation is about (names as dcrn.models.frame_vector.feature_names gives them)
BODY_PARTS = {
    "head": tuple(range(11)),
    "left arm": (11, 13, 15, 17, 19, 21),
    "right arm": (12, 14, 16, 18, 20, 22),
    "left leg": (23, 25, 27, 29, 31),
    "right leg": (24, 26, 28, 30, 32),
    "torso": (11, 12, 23, 24),
}
HAND_PARTS = {
    "thumb": (1, 2, 3, 4),
    "index finger": (5, 6, 7, 8),
    "middle finger": (9, 10, 11, 12),
    "ring finger": (13, 14, 15, 16),
    "little finger": (17, 18, 19, 20),
    "palm": (0, 1, 5, 9, 13, 17),
}

BODY_LINE = QColor(0, 200, 255, 220)
BODY_JOINT = QColor(255, 255, 255)
HAND_LINE = QColor(255, 170, 0, 230)
HAND_JOINT = QColor(255, 230, 90)
REGION = QColor(255, 255, 255, 120)
FOR_COLOR = QColor(60, 230, 110)  # the top part speaks for the decision
AGAINST_COLOR = QColor(255, 70, 70)  # ... or against it
TAG_BACK = QColor(0, 0, 0, 170)  # behind a person's own decision
TAG_TEXT = QColor(255, 255, 255)


@dataclass(frozen=True)
class Keypoints:
    """One frame's landmarks in the displayed frame's pixels, and the explanation of the decision."""

    people: tuple[np.ndarray, ...] = ()  # per person: (33, 3) x, y, visibility; the first drives the model
    hands: tuple[np.ndarray, ...] = ()  # per hand: (21, 2) x, y, in the model's slot order ("hand 1" first)
    regions: tuple[np.ndarray, ...] = ()  # per tracked hand or person: (4, 2) corners of its rotated square
    label: str = ""  # the decision explained
    parts: tuple[tuple[str, float], ...] = ()  # (part, share in [-1, 1]), the largest share first
    tags: tuple[str, ...] = ()  # per person (several people followed): their own decision, "" where none

    def top_joints(self) -> tuple[str, tuple[int, ...], float]:
        """The part with the largest share that names landmarks: ("person" or "hand K", indices, share)."""
        for name, share in self.parts:
            if name in BODY_PARTS and self.people:
                return "person", BODY_PARTS[name], share
            owner, _, finger = name.partition(": ")
            if finger in HAND_PARTS and owner.startswith("hand "):
                return owner, HAND_PARTS[finger], share
        return "", (), 0.0


def explanation(keypoints: Keypoints | None, top: int = EXPLAINED_PARTS) -> str:
    """The line under the label: "fall: left leg +42%, torso +20%" (the ``top`` largest shares), or ""."""
    if keypoints is None or not keypoints.parts:
        return ""
    named = ", ".join(f"{name} {share * 100:+.0f}%" for name, share in keypoints.parts[:top])
    return f"{keypoints.label}: {named}" if keypoints.label else named


def paint_keypoints(painter: QPainter, rect: QRect, frame: QSize, keypoints: Keypoints) -> None:
    """Draw ``keypoints`` (pixels of a ``frame``-sized picture) over that picture drawn into ``rect``."""
    if frame.width() <= 0 or frame.height() <= 0:
        return
    scale = np.float32([rect.width() / frame.width(), rect.height() / frame.height()])
    offset = np.float32([rect.left(), rect.top()])
    width = max(1.5, rect.height() / 300)  # a line; joints are dots three times as wide
    painter.save()
    painter.setClipRect(rect)  # a region reaching past the frame's edge is cut there
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.setPen(QPen(REGION, 1.0, Qt.PenStyle.DashLine))
    for corners in keypoints.regions:
        painter.drawPolygon(_polygon(corners * scale + offset))
    owner, highlight, share = keypoints.top_joints()
    for k, person in enumerate(keypoints.people):
        points = person[:, :2] * scale + offset
        shown = person[:, 2] >= MIN_VISIBILITY
        lines = [(a, b) for a, b in POSE_CONNECTIONS if shown[a] and shown[b]]
        _draw(painter, points, lines, np.flatnonzero(shown), BODY_LINE, BODY_JOINT, width)
        if owner == "person" and k == 0:
            marked = [i for i in highlight if shown[i]]
            _dots(painter, points[marked], FOR_COLOR if share >= 0 else AGAINST_COLOR, 5 * width)
    for k, hand in enumerate(keypoints.hands):
        points = hand[:, :2] * scale + offset
        _draw(painter, points, HAND_CONNECTIONS, np.arange(len(points)), HAND_LINE, HAND_JOINT, width)
        if owner == f"hand {k + 1}":
            _dots(painter, points[list(highlight)], FOR_COLOR if share >= 0 else AGAINST_COLOR, 4 * width)
    for person, tag in zip(keypoints.people, keypoints.tags, strict=False):
        shown = person[:, 2] >= MIN_VISIBILITY
        if tag and shown.any():
            top = person[shown, :2] * scale + offset
            _tag(painter, tag, float(np.median(top[:, 0])), float(top[:, 1].min()), rect)
    painter.restore()


def _tag(painter: QPainter, text: str, x: float, y: float, rect: QRect) -> None:
    """``text`` in a dark box centred on ``x``, its bottom just above ``y`` (kept inside ``rect``)."""
    font = QFont()
    font.setPixelSize(max(10, rect.height() // 32))
    font.setBold(True)
    metrics = QFontMetrics(font)
    pad = metrics.height() // 4
    width, height = metrics.horizontalAdvance(text) + 2 * pad, metrics.height() + pad
    left = min(max(x - width / 2, rect.left()), rect.right() - width)
    top = min(max(y - height - pad, rect.top()), rect.bottom() - height)
    box = QRect(int(left), int(top), int(width), int(height))
    painter.fillRect(box, TAG_BACK)
    painter.setFont(font)
    painter.setPen(TAG_TEXT)
    painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)


def _draw(painter: QPainter, points: np.ndarray, lines, joints: np.ndarray, line: QColor, joint: QColor, width):
    pen = QPen(line, width)
    pen.setCapStyle(Qt.PenCapStyle.RoundCap)
    painter.setPen(pen)
    painter.drawLines([QLineF(*points[a], *points[b]) for a, b in lines])
    _dots(painter, points[joints], joint, 3 * width)


def _dots(painter: QPainter, points: np.ndarray, color: QColor, diameter: float) -> None:
    """Round dots in one call: points drawn with a pen as wide as a dot and round ends."""
    pen = QPen(color, diameter)
    pen.setCapStyle(Qt.PenCapStyle.RoundCap)
    painter.setPen(pen)
    painter.drawPoints(_polygon(points))


def _polygon(points: np.ndarray) -> QPolygonF:
    return QPolygonF([QPointF(float(x), float(y)) for x, y in points])
