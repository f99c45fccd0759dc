"""A MediaPipe SSD detector (palm or pose) on a whole frame: letterbox, infer, decode, back to frame pixels.

The frame is fitted into the detector's square input keeping its aspect ratio, the rest zero
[ImageToTensorCalculator, ``keep_aspect_ratio``, ``BORDER_ZERO``]; decoded boxes and keypoints go back
through the same square [DetectionLetterboxRemovalCalculator], so they come out in frame pixels.
"""

from __future__ import annotations

import numpy as np

from dcrn.engine.keypoints import roi as rois
from dcrn.engine.keypoints.anchors import AnchorSpec, Detections, decode, ssd_anchors
from dcrn.engine.keypoints.runtime import Graph, RuntimeOptions, to_tensor


class Detector:
    """``detector(frame, threshold) -> Detections`` in frame pixels, best first, before suppression."""

    def __init__(
        self, name: str, anchors: AnchorSpec, *, input_range: tuple[float, float], runtime: RuntimeOptions
    ) -> None:
        self.graph = Graph(name, runtime)
        if self.graph.input_size != anchors.input_size:
            raise ValueError(f"{name} takes {self.graph.input_size} px, its anchors are for {anchors.input_size} px")
        self.anchors = ssd_anchors(anchors)
        self.input_range = input_range

    @property
    def calls(self) -> int:
        return self.graph.calls

    def __call__(self, frame: np.ndarray, threshold: float) -> Detections:
        height, width = frame.shape[:2]
        square = rois.full_frame(width, height)
        size = self.graph.input_size
        tensor = to_tensor(rois.crop(frame, square, size, zero_border=True), *self.input_range)
        raw_boxes, raw_scores = self.graph(tensor)
        if raw_boxes.shape[1] != len(self.anchors):
            raise ValueError(f"{self.graph.name} gave {raw_boxes.shape[1]} boxes for {len(self.anchors)} anchors")
        found = decode(raw_boxes[0], raw_scores[0], self.anchors, size, threshold)
        corners = square.to_frame(found.boxes.reshape(-1, 2)).reshape(-1, 4)  # angle 0: corners stay corners
        points = square.to_frame(found.keypoints.reshape(-1, 2)).reshape(found.keypoints.shape)
        return Detections(found.scores, corners, points)
