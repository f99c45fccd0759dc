"""The ``hands`` keypoint encoder: up to two hands x 21 landmarks, handedness and presence, per frame.

MediaPipe's hand pipeline, one step per frame with explicit state (a
:class:`~dcrn.engine.keypoints.tracking.TrackState`, as the body encoder)::

    hands = HandsEncoder()
    state = TrackState()
    result, state = hands.step(frame, state)  # frame (H, W, 3) uint8 RGB
    for hand in result.hands: ...             # landmarks (21, 3) in frame pixels, right, presence

The palm detector (``palm_detection_lite``, 192 px, 2016 anchors) runs on the whole frame every
``idle_interval`` frames while no hand is tracked (default 2: a hand coming into view is found a frame
later at most, and a view without hands costs half), and every ``search_interval`` frames while fewer than
``max_hands`` are (MediaPipe runs it on every such frame: with one hand in view that doubles the cost of
every frame). Each tracked hand's
landmarks (``hand_landmark_lite``, 224 px) are read in the region predicted from its previous landmarks;
a hand whose presence score falls below ``presence_threshold`` is lost. A new palm that overlaps a
tracked hand (IoU > 0.5) is that hand, not another.

Landmarks: wrist (0); thumb 1-4; index 5-8; middle 9-12; ring 13-16; little finger 17-20 (base to tip).
``right`` is the model's handedness score for a camera image as it comes from the camera (not mirrored):
MediaPipe labels the same score "Left" because it assumes a mirrored selfie view.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from dcrn.engine.keypoints import roi as rois
from dcrn.engine.keypoints.anchors import PALM_ANCHORS, weighted_nms
from dcrn.engine.keypoints.detector import Detector
from dcrn.engine.keypoints.roi import Roi
from dcrn.engine.keypoints.runtime import Graph, RuntimeOptions, to_tensor
from dcrn.engine.keypoints.tracking import Track, TrackState, check_frame, check_search, tracks_with_search

log = logging.getLogger(__name__)

NUM_LANDMARKS = 21
LANDMARK_SIZE = 224
LANDMARK_OUTPUTS = (0, 1, 2)  # landmarks, hand flag, handedness (not the world landmarks)
NORMALIZE_Z = 0.4  # MediaPipe's hand landmark z scale (TensorsToLandmarksCalculator normalize_z)


@dataclass(frozen=True)
class HandsConfig:
    max_hands: int = 2
    detection_threshold: float = 0.5  # palm detector score (MediaPipe's min_detection_confidence)
    presence_threshold: float = 0.5  # hand presence below which a hand is lost (min_tracking_confidence)
    search_interval: int = 10  # frames between palm searches while some but not max_hands are tracked
    idle_interval: int = 2  # frames between palm searches while no hand is tracked (1: every frame)
    detector: str = "palm_detection_lite.tflite"
    landmarks: str = "hand_landmark_lite.tflite"
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)  # threads and precision of the graphs


@dataclass(frozen=True)
class Hand:
    id: int  # the track's id: the same hand keeps it while tracked
    landmarks: np.ndarray  # (21, 3) float32: x, y in frame pixels, z depth relative to the wrist (pixels)
    presence: float  # hand presence score in [0, 1]
    right: float  # probability that it is a right hand (camera image not mirrored)
    roi: Roi  # the region the landmarks were read in


@dataclass(frozen=True)
class HandsResult:
    hands: tuple[Hand, ...]
    detector_ran: bool  # the palm detector ran on this frame


class HandsEncoder:
    """Hand landmarks of up to ``max_hands`` hands per frame, tracked from frame to frame."""

    def __init__(self, config: HandsConfig = HandsConfig()) -> None:
        check_search(config.max_hands, config.search_interval, config.idle_interval, "max_hands")
        self.config = config
        self.detector = Detector(config.detector, PALM_ANCHORS, input_range=(0.0, 1.0), runtime=config.runtime)
        self.landmark_graph = Graph(config.landmarks, config.runtime, outputs=LANDMARK_OUTPUTS)

    def step(self, frame: np.ndarray, state: TrackState) -> tuple[HandsResult, TrackState]:
        """One frame (H, W, 3) uint8 RGB and the state from the previous frame -> hands found, next state."""
        width, height = check_frame(frame)
        cfg = self.config
        tracks, next_id, searched = tracks_with_search(
            state, width, height, cfg.max_hands, cfg.search_interval, lambda: self.find(frame), cfg.idle_interval
        )
        hands = [hand for track in tracks if (hand := self.landmarks(frame, track)) is not None]
        next_tracks: list[Track] = []
        for hand in hands:  # two regions that converge onto one hand: the first keeps it
            roi = rois.hand_roi(hand.landmarks)
            if all(rois.iou(roi, t.roi) <= rois.ASSOCIATION_IOU for t in next_tracks):
                next_tracks.append(Track(hand.id, roi))
        result = HandsResult(tuple(hands), searched)
        return result, state.advanced(tuple(next_tracks), next_id, searched, (width, height))

    def find(self, frame: np.ndarray) -> list[Roi]:
        """Hand regions from the palms the detector finds, best scoring first."""
        detections = weighted_nms(self.detector(frame, self.config.detection_threshold))
        return [rois.palm_roi(box, points) for box, points in zip(detections.boxes, detections.keypoints, strict=True)]

    def landmarks(self, frame: np.ndarray, track: Track) -> Hand | None:
        """The hand's landmarks in the track's region, or None when the model says no hand is there."""
        roi = track.roi
        tensor = to_tensor(rois.crop(frame, roi, LANDMARK_SIZE), 0.0, 1.0)
        raw, flag, handedness = self.landmark_graph(tensor)
        presence = float(flag.reshape(-1)[0])
        if presence < self.config.presence_threshold:
            return None
        values = raw.reshape(NUM_LANDMARKS, 3) / LANDMARK_SIZE  # x, y in [0, 1] of the crop
        xy = roi.to_frame(values[:, :2])
        z = values[:, 2:3] / NORMALIZE_Z * roi.size
        landmarks = np.concatenate([xy, z], axis=1).astype(np.float32)
        return Hand(track.id, landmarks, presence, float(handedness.reshape(-1)[0]), roi)
