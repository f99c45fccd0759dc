"""The ``body`` keypoint encoder: 33 pose landmarks with visibility per frame, MediaPipe's BlazePose.

One step per frame, state explicit (:class:`~dcrn.engine.keypoints.tracking.TrackState`)::

    body = BodyEncoder()
    state = TrackState()
    for frame in frames:                      # (H, W, 3) uint8 RGB
        result, state = body.step(frame, state)
        for person in result.people: ...      # landmarks (33, 3) in frame pixels, visibility (33,)

The detector (``pose_detection``, 224 px, 2254 anchors) runs only while fewer people are tracked than
``max_people`` (every frame when none is, every ``search_interval`` frames otherwise); a tracked person's
landmarks are read (``pose_landmark_full``, 256 px) in the region predicted from the previous frame's
landmarks, and the person is lost when the model's pose presence falls below ``presence_threshold``.

**BlazePose is a single-person model.** Its landmark model reads one person per region, and MediaPipe keeps
one detection (the best scoring). ``max_people=1`` (the default) keeps the largest person found instead:
at a camera the person nearest is usually the one acting. ``max_people > 1`` keeps that many detections
after non-maximum suppression, each tracked in its own region with its own id; how well that holds on
crowded footage is measured in docs/KEYPOINTS.md.

Landmark decoding is MediaPipe's (``tensors_to_pose_landmarks_and_segmentation``): x, y in 256 px units of
the crop, refined from the 64x64 heatmap (kernel 7, where the heatmap is confident), visibility and presence
through a sigmoid, z scaled like x. MediaPipe's temporal smoothing of landmarks is not applied: features
see the raw landmarks, and the region for the next frame follows them without lag.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from dcrn.engine.keypoints import roi as rois
from dcrn.engine.keypoints.anchors import POSE_ANCHORS, sigmoid, weighted_nms
from dcrn.engine.keypoints.detector import Detector
from dcrn.engine.keypoints.roi import Roi
from dcrn.engine.keypoints.runtime import Graph, RuntimeOptions, to_tensor
from dcrn.engine.keypoints.tracking import Track, TrackState, check_frame, check_search, tracks_with_search

log = logging.getLogger(__name__)

NUM_LANDMARKS = 33  # nose, eyes, ears, mouth, shoulders, elbows, wrists, hands, hips, knees, ankles, feet
LANDMARK_SIZE = 256
HEATMAP_KERNEL = 7
# Of the landmark graph's outputs (landmarks, pose flag, segmentation, heatmap, world landmarks) the ones read:
# the segmentation mask is a third of the graph's work and nothing uses it.
LANDMARK_OUTPUTS = (0, 1, 3)
HEATMAP_MIN_CONFIDENCE = 0.5


@dataclass(frozen=True)
class BodyConfig:
    max_people: int = 1  # BlazePose is single-person: 1 keeps the largest person found
    detection_threshold: float = 0.5  # pose detector score (MediaPipe's min_detection_confidence)
    presence_threshold: float = 0.5  # pose presence below which a person is lost (min_tracking_confidence)
    search_interval: int = 10  # frames between detector runs while some but not max_people are tracked
    idle_interval: int = 1  # frames between detector runs while nobody is tracked (1: every frame)
    hold_region: bool = True  # a person lost in the predicted region is looked for in the last one read
    detector: str = "pose_detection.tflite"
    landmarks: str = "pose_landmark_full.tflite"
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)  # threads and precision of the graphs


@dataclass(frozen=True)
class Person:
    id: int  # the track's id: the same person keeps it while tracked
    landmarks: np.ndarray  # (33, 3) float32: x, y in frame pixels, z depth (pixels, hips at about 0)
    visibility: np.ndarray  # (33,) float32 in [0, 1]: the landmark is in view and not occluded
    presence: np.ndarray  # (33,) float32 in [0, 1]: the landmark is inside the frame
    score: float  # pose presence of the region
    roi: Roi  # the region the landmarks were read in


@dataclass(frozen=True)
class BodyResult:
    people: tuple[Person, ...]
    detector_ran: bool  # the pose detector ran on this frame


def refine_from_heatmap(points: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """MediaPipe's RefineLandmarksFromHeatmapCalculator: each (x, y) in [0, 1] of the crop moves to the
    sigmoid-weighted mean position of its heatmap channel in a 7x7 window (cut at the heatmap's edges),
    where that window's most confident cell reaches 0.5. ``points`` (N, 2), ``heatmap`` (H, W, N) logits."""
    height, width, channels = heatmap.shape
    offset = (HEATMAP_KERNEL - 1) // 2
    cols = (points[:, 0] * width).astype(np.int64)  # truncation toward zero, as MediaPipe's int cast
    rows = (points[:, 1] * height).astype(np.int64)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    padded = np.pad(heatmap, ((offset, offset), (offset, offset), (0, 0)), constant_values=-np.inf)
    steps = np.arange(HEATMAP_KERNEL)
    win_rows = np.clip(rows, 0, height - 1)[:, None] + steps  # (N, K) rows of the padded map
    win_cols = np.clip(cols, 0, width - 1)[:, None] + steps  # (N, K)
    window = padded[win_rows[:, :, None], win_cols[:, None, :], np.arange(channels)[:, None, None]]  # (N, K, K)
    confidence = sigmoid(window)  # 0 outside the heatmap
    total = confidence.sum(axis=(1, 2))
    row_pos = (win_rows - offset).astype(np.float32)  # heatmap row of each window row
    col_pos = (win_cols - offset).astype(np.float32)
    mean_row = (confidence.sum(axis=2) * row_pos).sum(axis=1) / np.maximum(total, 1e-12)
    mean_col = (confidence.sum(axis=1) * col_pos).sum(axis=1) / np.maximum(total, 1e-12)
    refine = inside & (confidence.max(axis=(1, 2)) >= HEATMAP_MIN_CONFIDENCE) & (total > 0)
    out = points.astype(np.float32).copy()
    out[refine, 0] = mean_col[refine] / width
    out[refine, 1] = mean_row[refine] / height
    return out


class BodyEncoder:
    """Pose landmarks of up to ``max_people`` people per frame, tracked from frame to frame."""

    def __init__(self, config: BodyConfig = BodyConfig()) -> None:
        check_search(config.max_people, config.search_interval, config.idle_interval, "max_people")
        self.config = config
        self.detector = Detector(config.detector, POSE_ANCHORS, input_range=(-1.0, 1.0), runtime=config.runtime)
        self.landmark_graph = Graph(config.landmarks, config.runtime, outputs=LANDMARK_OUTPUTS)

    def step(self, frame: np.ndarray, state: TrackState) -> tuple[BodyResult, TrackState]:
        """One frame (H, W, 3) uint8 RGB and the state from the previous frame -> people found, next state."""
        width, height = check_frame(frame)
        cfg = self.config
        tracks, next_id, searched = tracks_with_search(
            state, width, height, cfg.max_people, cfg.search_interval, lambda: self.find(frame), cfg.idle_interval
        )
        people: list[Person] = []
        aligners: list[np.ndarray | None] = []
        for track in tracks:
            read = self.landmarks(frame, track)
            if read is None and cfg.hold_region and track.held is not None:
                read = self.landmarks(frame, Track(track.id, track.held))
                if read is not None:  # the predicted region lost them, the held one did not: stay there
                    read = (read[0], None)
            if read is not None:
                people.append(read[0])
                aligners.append(read[1])
        next_tracks = follow(people, aligners)
        result = BodyResult(tuple(people), searched)
        return result, state.advanced(next_tracks, next_id, searched, (width, height))

    def find(self, frame: np.ndarray) -> list[Roi]:
        """Regions of the people the detector finds, in the order they are taken (largest first when one
        person is kept, else best scoring first)."""
        detections = weighted_nms(self.detector(frame, self.config.detection_threshold))
        found = [rois.alignment_roi(points[0], points[1]) for points in detections.keypoints]
        if self.config.max_people == 1:
            found.sort(key=lambda r: -r.size)
        return found

    def landmarks(self, frame: np.ndarray, track: Track) -> tuple[Person, np.ndarray] | None:
        """The person's landmarks in the track's region and the (2, 2) alignment points (frame pixels) that
        place the next region, or None when the model says no pose is there."""
        roi = track.roi
        tensor = to_tensor(rois.crop(frame, roi, LANDMARK_SIZE), 0.0, 1.0)
        raw, flag, heatmap = self.landmark_graph(tensor)
        score = float(flag.reshape(-1)[0])
        if score < self.config.presence_threshold:
            return None
        values = raw.reshape(-1, 5)  # (39, 5): x, y, z, visibility, presence; 33 landmarks + 6 auxiliary
        points = refine_from_heatmap(values[:, :2] / LANDMARK_SIZE, heatmap[0])
        xy = roi.to_frame(points)  # (39, 2)
        z = values[:, 2:3] / LANDMARK_SIZE * roi.size
        landmarks = np.concatenate([xy, z], axis=1).astype(np.float32)  # (39, 3)
        scores = sigmoid(values[:NUM_LANDMARKS, 3:5])  # (33, 2): visibility, presence
        person = Person(track.id, landmarks[:NUM_LANDMARKS], scores[:, 0], scores[:, 1], score, roi)
        return person, xy[NUM_LANDMARKS : NUM_LANDMARKS + 2]


def follow(people: list[Person], aligners: list[np.ndarray | None]) -> tuple[Track, ...]:
    """Next frame's tracks: each person's region from their alignment landmarks (hip centre and the point
    that encodes size and rotation), holding the region they were read in; a person read in a held region
    (``aligners`` None) stays in it. Of two regions that converge onto one person the first keeps it.

    The held region is what keeps a person who lies down: after a fall the landmarks of someone on the floor
    often predict a region where the model no longer sees them, while the region they were last read in
    still does (GMDCSA24: docs/KEYPOINTS.md)."""
    tracks: list[Track] = []
    for person, points in zip(people, aligners, strict=True):
        roi = person.roi if points is None else rois.alignment_roi(points[0], points[1])
        if all(rois.iou(roi, t.roi) <= rois.ASSOCIATION_IOU for t in tracks):
            tracks.append(Track(person.id, roi, held=person.roi))
    return tuple(tracks)
