"""SSD anchors, box decoding and weighted non-maximum suppression of MediaPipe's palm and pose detectors.

Both detectors are single-class SSDs (BlazePalm, BlazePose's detector) that predict, for every anchor, a
score logit and a box with keypoints relative to the anchor. What turns that into detections is MediaPipe's,
reproduced here with the options of its 0.10.14 CPU graphs (``palm_detection_cpu``, ``pose_detection_cpu``):

- anchors [SsdAnchorsCalculator]: per stride, a grid of ``ceil(input / stride)`` cells; layers of equal
  stride are merged, and every layer adds two anchors per cell (aspect ratio 1 and the interpolated scale);
  ``fixed_anchor_size``: every anchor is 1 x 1, only its centre matters. Palm: 192 px, strides
  8, 16, 16, 16 -> 2016 anchors; pose: 224 px, strides 8, 16, 32, 32, 32 -> 2254 anchors.
- decoding [TensorsToDetectionsCalculator, ``reverse_output_order``]: box centre = raw / input size +
  anchor centre, box size = raw / input size; keypoints likewise; score = sigmoid(logit clipped to +-100).
- suppression [NonMaxSuppressionCalculator, WEIGHTED, IoU 0.3]: the best remaining detection absorbs every
  one that overlaps it by more than 0.3; its box and keypoints become the score-weighted mean of the group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SCORE_CLIP = 100.0  # logits are clipped to +-100 before the sigmoid
NMS_IOU = 0.3


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, float32 out; computed in float64, where exp(100) does not overflow."""
    return (1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))).astype(np.float32)


@dataclass(frozen=True)
class AnchorSpec:
    """SsdAnchorsCalculator options, as the two detectors set them."""

    input_size: int  # square input, pixels
    strides: tuple[int, ...]  # one per layer
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    anchor_offset: float = 0.5  # anchor centre within its cell
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0  # > 0: one more anchor per cell (MediaPipe's default)
    fixed_anchor_size: bool = True  # every anchor 1 x 1 (the models predict absolute sizes)


PALM_ANCHORS = AnchorSpec(input_size=192, strides=(8, 16, 16, 16))
POSE_ANCHORS = AnchorSpec(input_size=224, strides=(8, 16, 32, 32, 32))


def _scale(spec: AnchorSpec, index: int) -> float:
    n = len(spec.strides)
    if n == 1:
        return (spec.min_scale + spec.max_scale) / 2
    return spec.min_scale + (spec.max_scale - spec.min_scale) * index / (n - 1)


def ssd_anchors(spec: AnchorSpec) -> np.ndarray:
    """(N, 4) float32 anchors ``x_centre, y_centre, width, height`` in [0, 1] of the input."""
    out: list[tuple[float, float, float, float]] = []
    layer = 0
    while layer < len(spec.strides):
        sizes: list[tuple[float, float]] = []  # (width, height) of each anchor of a cell
        last = layer
        while last < len(spec.strides) and spec.strides[last] == spec.strides[layer]:
            scale = _scale(spec, last)
            for ratio in spec.aspect_ratios:
                sizes.append((scale * math.sqrt(ratio), scale / math.sqrt(ratio)))
            if spec.interpolated_scale_aspect_ratio > 0:
                following = 1.0 if last == len(spec.strides) - 1 else _scale(spec, last + 1)
                between = math.sqrt(scale * following)
                ratio = spec.interpolated_scale_aspect_ratio
                sizes.append((between * math.sqrt(ratio), between / math.sqrt(ratio)))
            last += 1
        cells = math.ceil(spec.input_size / spec.strides[layer])
        for y in range(cells):
            for x in range(cells):
                for width, height in sizes:
                    if spec.fixed_anchor_size:
                        width = height = 1.0
                    out.append(((x + spec.anchor_offset) / cells, (y + spec.anchor_offset) / cells, width, height))
        layer = last
    return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True)
class Detections:
    """Decoded detections, in [0, 1] units of the detector's input."""

    scores: np.ndarray  # (N,) float32, sorted best first
    boxes: np.ndarray  # (N, 4) float32: xmin, ymin, xmax, ymax
    keypoints: np.ndarray  # (N, K, 2) float32: x, y

    def __len__(self) -> int:
        return len(self.scores)


def decode(
    raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, input_size: int, threshold: float
) -> Detections:
    """The detections scoring at least ``threshold``, from one image's ``raw_boxes`` (N, 4 + 2K) and
    ``raw_scores`` (N,) or (N, 1) logits."""
    scores = sigmoid(np.clip(raw_scores.reshape(-1), -SCORE_CLIP, SCORE_CLIP))
    keep = np.flatnonzero(scores >= threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    raw = raw_boxes[keep].astype(np.float32) / input_size  # (M, 4 + 2K)
    anchor = anchors[keep]  # (M, 4)
    centre = raw[:, 0:2] * anchor[:, 2:4] + anchor[:, 0:2]  # (M, 2)
    half = raw[:, 2:4] * anchor[:, 2:4] / 2  # (M, 2)
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    num_keypoints = (raw_boxes.shape[1] - 4) // 2
    points = raw[:, 4:].reshape(len(keep), num_keypoints, 2) * anchor[:, None, 2:4] + anchor[:, None, 0:2]  # (M, K, 2)
    return Detections(scores[keep].astype(np.float32), boxes.astype(np.float32), points.astype(np.float32))


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(M,) intersection over union of one (4,) box with (M, 4) boxes (xmin, ymin, xmax, ymax)."""
    w = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    h = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def weighted_nms(detections: Detections, threshold: float = NMS_IOU, max_detections: int | None = None) -> Detections:
    """MediaPipe's WEIGHTED non-maximum suppression of score-sorted detections."""
    remaining = np.arange(len(detections))
    scores, boxes, points = [], [], []
    while remaining.size and (max_detections is None or len(scores) < max_detections):
        best = remaining[0]
        overlap = box_iou(detections.boxes[best], detections.boxes[remaining]) > threshold
        group = remaining[overlap]
        if group.size == 0:  # a degenerate box overlaps nothing, not even itself
            group = remaining[:1]
            overlap = np.zeros(remaining.size, dtype=bool)
            overlap[0] = True
        weights = detections.scores[group]  # (G,)
        total = float(weights.sum())
        scores.append(detections.scores[best])
        boxes.append((detections.boxes[group] * weights[:, None]).sum(0) / total)
        points.append((detections.keypoints[group] * weights[:, None, None]).sum(0) / total)
        remaining = remaining[~overlap]
    k = detections.keypoints.shape[1]
    return Detections(
        np.asarray(scores, dtype=np.float32).reshape(-1),
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(points, dtype=np.float32).reshape(-1, k, 2),
    )
