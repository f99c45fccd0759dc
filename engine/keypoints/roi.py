"""Regions of interest: the rotated squares a landmark model reads, as MediaPipe computes and crops them.

A region is a square in frame pixels: centre, side, and a rotation (radians, clockwise on screen, as
MediaPipe's ``NormalizedRect.rotation``), so the body or hand stands upright in the crop whatever its tilt.
Every rule here is the one MediaPipe 0.10.14's CPU graphs use (read from the graph configs compiled into
its wheel; names of MediaPipe's calculators in brackets):

- **crop** [ImageToTensorCalculator]: the rotated square is warped to an ``S x S`` tensor with one affine
  map whose corners go to the tensor's corners, bilinear; outside the frame: zeros for the detectors'
  letterbox, the edge pixels repeated for the landmark models.
- **palm detection -> region** [PalmDetectionDetectionToRoi]: the box, turned so that wrist (keypoint 0)
  to middle-finger knuckle (keypoint 2) points up; shifted by half its height towards the fingers, made
  square on its long side, scaled 2.6.
- **pose detection -> region** [PoseDetectionToRoi, AlignmentPointsRectsCalculator]: centred on the hip
  centre (keypoint 0), side twice the distance to keypoint 1 (which encodes size and rotation), turned so
  0 -> 1 points up, scaled 1.25.
- **hand landmarks -> region** [HandLandmarkLandmarksToRoi]: the box around wrist, thumb base and the
  knuckles (12 of the 21 landmarks) in the frame of the hand's own rotation (wrist to the mean of the
  index, middle and ring knuckles points up); shifted 0.1 of its height towards the wrist, squared, x2.
- **pose landmarks -> region** [PoseLandmarksToRoi]: as pose detection, from the two auxiliary landmarks
  the landmark model predicts for this purpose.
- **association** [AssociationNormRectCalculator]: a new region that overlaps a tracked one by more than
  0.5 (intersection over union of their upright squares) is the same hand / person and is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

TARGET_ANGLE = math.pi / 2  # the alignment vector should point up in the crop
PALM_SCALE, PALM_SHIFT_Y = 2.6, -0.5
HAND_SCALE, HAND_SHIFT_Y = 2.0, -0.1
POSE_SCALE = 1.25
HAND_RECT_LANDMARKS = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)  # wrist, thumb base, two joints of each finger
ASSOCIATION_IOU = 0.5


@dataclass(frozen=True)
class Roi:
    """A rotated square in frame pixels."""

    cx: float  # centre x
    cy: float  # centre y
    size: float  # side
    angle: float  # rotation in radians, clockwise on screen; 0 = upright

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) points in crop units ([0, 1] across the crop) -> (N, 2) frame pixels."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        u = points[:, 0] - 0.5
        v = points[:, 1] - 0.5
        x = self.cx + self.size * (c * u - s * v)
        y = self.cy + self.size * (s * u + c * v)
        return np.stack([x, y], axis=1).astype(np.float32)

    def crop_matrix(self, out_size: int) -> np.ndarray:
        """The 2x3 affine map from frame pixels to the ``out_size`` square crop."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        k = out_size / self.size
        rot_t = np.array([[c, s], [-s, c]]) * k  # R^T, scaled
        offset = out_size / 2 - rot_t @ np.array([self.cx, self.cy])
        return np.hstack([rot_t, offset[:, None]]).astype(np.float64)

    def corners(self) -> np.ndarray:
        """(4, 2) frame pixels: top-left, top-right, bottom-right, bottom-left of the crop."""
        return self.to_frame(np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float32))


def full_frame(width: int, height: int) -> Roi:
    """The whole frame, padded to a square on its short side (MediaPipe's letterbox for the detectors)."""
    return Roi(width / 2, height / 2, float(max(width, height)), 0.0)


def crop(frame: np.ndarray, roi: Roi, out_size: int, *, zero_border: bool = False) -> np.ndarray:
    """The region as an ``(out_size, out_size, 3)`` uint8 crop of the frame (bilinear)."""
    border = cv2.BORDER_CONSTANT if zero_border else cv2.BORDER_REPLICATE
    return cv2.warpAffine(
        frame, roi.crop_matrix(out_size), (out_size, out_size), flags=cv2.INTER_LINEAR, borderMode=border
    )


def normalize_radians(angle: float) -> float:
    """``angle`` in [-pi, pi)."""
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def rotation(start: np.ndarray, end: np.ndarray) -> float:
    """The rotation that makes ``start -> end`` (frame pixels) point up [DetectionsToRectsCalculator]."""
    return normalize_radians(TARGET_ANGLE - math.atan2(-(end[1] - start[1]), end[0] - start[0]))


def transform(
    cx: float, cy: float, width: float, height: float, angle: float, *, scale: float, shift_y: float = 0.0
) -> Roi:
    """MediaPipe's RectTransformationCalculator with ``square_long`` (pixel units): shift along the
    rotated y axis by ``shift_y`` of the height, square on the long side, scale."""
    cx -= height * shift_y * math.sin(angle)
    cy += height * shift_y * math.cos(angle)
    return Roi(float(cx), float(cy), float(max(width, height) * scale), float(angle))


def palm_roi(box: np.ndarray, keypoints: np.ndarray) -> Roi:
    """Region of a palm detection: ``box`` (xmin, ymin, xmax, ymax) and (7, 2) ``keypoints``, frame pixels."""
    angle = rotation(keypoints[0], keypoints[2])
    width, height = box[2] - box[0], box[3] - box[1]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return transform(cx, cy, width, height, angle, scale=PALM_SCALE, shift_y=PALM_SHIFT_Y)


def alignment_roi(centre: np.ndarray, scale_point: np.ndarray) -> Roi:
    """Region of a body from its two alignment points (pose detection keypoints 0 and 1, or the landmark
    model's auxiliary landmarks), frame pixels [AlignmentPointsRectsCalculator, then x1.25]."""
    side = 2 * math.dist(centre, scale_point)
    angle = rotation(centre, scale_point)
    return transform(centre[0], centre[1], side, side, angle, scale=POSE_SCALE)


def hand_roi(landmarks: np.ndarray) -> Roi:
    """Region for the next frame from a hand's (21, >=2) landmarks in frame pixels [HandLandmarksToRect]."""
    points = landmarks[list(HAND_RECT_LANDMARKS), :2].astype(np.float64)
    knuckles = (points[4] + points[8]) / 2  # index and ring finger knuckles ...
    knuckles = (knuckles + points[6]) / 2  # ... averaged with the middle finger's
    angle = rotation(points[0], knuckles)
    centre = (points.max(0) + points.min(0)) / 2
    c, s = math.cos(-angle), math.sin(-angle)
    rel = points - centre
    projected = np.stack([rel[:, 0] * c - rel[:, 1] * s, rel[:, 0] * s + rel[:, 1] * c], axis=1)
    low, high = projected.min(0), projected.max(0)
    mid = (low + high) / 2
    c, s = math.cos(angle), math.sin(angle)
    cx = mid[0] * c - mid[1] * s + centre[0]
    cy = mid[0] * s + mid[1] * c + centre[1]
    width, height = high - low
    return transform(cx, cy, width, height, angle, scale=HAND_SCALE, shift_y=HAND_SHIFT_Y)


def iou(a: Roi, b: Roi) -> float:
    """Intersection over union of the two regions' upright squares (rotation ignored, as MediaPipe does)."""
    ha, hb = a.size / 2, b.size / 2
    w = min(a.cx + ha, b.cx + hb) - max(a.cx - ha, b.cx - hb)
    h = min(a.cy + ha, b.cy + hb) - max(a.cy - ha, b.cy - hb)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (a.size**2 + b.size**2 - inter)


def associate(new: Sequence[Roi], tracked: Sequence[Roi], threshold: float = ASSOCIATION_IOU) -> list[int]:
    """Indices of the ``new`` regions that are not already tracked: each overlaps no tracked region, nor
    a new one kept before it, by more than ``threshold``."""
    kept: list[int] = []
    for i, roi in enumerate(new):
        taken = [*tracked, *(new[j] for j in kept)]
        if all(iou(roi, other) <= threshold for other in taken):
            kept.append(i)
    return kept
