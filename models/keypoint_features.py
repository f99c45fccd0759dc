"""Features of hand and body keypoints that hold across people, places and cameras: pure numpy math.

The keypoint encoders (``dcrn.engine.keypoints``) give landmarks in frame pixels; a classifier taught on a
few clips should see what the hand or body *does*, not where it stands in the picture or how far it is
from the camera. So every position here is taken relative to the hand's or body's own centre and in units
of its own size, and every motion in those units per frame:

- **hand** (21 landmarks, MediaPipe order): positions relative to the wrist in palm lengths (wrist to the
  middle finger's knuckle); the bend of each of the 15 finger joints; the palm's direction in the picture
  (up / down / sideways: what tells thumbs up from thumbs down).
- **body** (33 landmarks, MediaPipe order): positions relative to the hip centre in torso lengths (hip
  centre to shoulder centre, which does not shrink when the person lies down); the 8 elbow, shoulder, hip
  and knee angles; the torso's direction (upright / lying); landmark visibility.
- **motion**: the change of a feature vector since the previous frame, and the centre's own velocity in
  body (or palm) lengths per frame, so a fall (the whole body dropping fast) shows even though positions
  are relative to the body.

Every feature vector starts with a presence flag; an absent hand or body is all zeros, so "nobody in view"
is a valid input (the background class), never an error. Velocities depend on the frame rate: teach on
footage at the camera's rate. This module imports nothing from the engine: training computes the same
features from landmarks stored with a clip.
"""

from __future__ import annotations

import numpy as np

HAND_LANDMARKS = 21
BODY_LANDMARKS = 33
WRIST, MIDDLE_KNUCKLE = 0, 9
FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))  # base to tip
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 11, 12, 13, 14, 15, 16
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 23, 24, 25, 26, 27, 28
LIMB_ANGLES = (  # (a, joint, b): the angle at ``joint`` between the segments to a and to b
    (L_SHOULDER, L_ELBOW, L_WRIST),
    (R_SHOULDER, R_ELBOW, R_WRIST),
    (L_ELBOW, L_SHOULDER, L_HIP),
    (R_ELBOW, R_SHOULDER, R_HIP),
    (L_SHOULDER, L_HIP, L_KNEE),
    (R_SHOULDER, R_HIP, R_KNEE),
    (L_HIP, L_KNEE, L_ANKLE),
    (R_HIP, R_KNEE, R_ANKLE),
)
MIN_SCALE = 1e-3  # pixels: a hand or torso smaller than this is treated as absent

HAND_DIM = 1 + 2 * HAND_LANDMARKS + 15 + 2  # presence, positions, joint bends, palm direction
BODY_DIM = 1 + 2 * BODY_LANDMARKS + BODY_LANDMARKS + len(LIMB_ANGLES) + 2  # + visibility, angles, torso


def _check(landmarks: np.ndarray, count: int, what: str) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] != count or points.shape[1] < 2:
        raise ValueError(f"{what} landmarks must be ({count}, 2 or 3), got {points.shape}")
    return points


def _direction(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """(2,) unit vector from start to end in the picture (y down); zeros when they coincide."""
    vector = end[:2] - start[:2]
    length = np.linalg.norm(vector)
    return vector / length if length > MIN_SCALE else np.zeros(2)


def hand_centre_scale(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The wrist (2,) and the palm length (wrist to middle knuckle), frame pixels."""
    points = _check(landmarks, HAND_LANDMARKS, "hand")
    return points[WRIST, :2], float(np.linalg.norm(points[MIDDLE_KNUCKLE, :2] - points[WRIST, :2]))


def body_centre_scale(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The hip centre (2,) and the torso length (hip centre to shoulder centre), frame pixels."""
    points = _check(landmarks, BODY_LANDMARKS, "body")
    hips = (points[L_HIP, :2] + points[R_HIP, :2]) / 2
    shoulders = (points[L_SHOULDER, :2] + points[R_SHOULDER, :2]) / 2
    return hips, float(np.linalg.norm(shoulders - hips))


def joint_bends(landmarks: np.ndarray) -> np.ndarray:
    """(15,) radians: how far each finger joint bends (0 = straight), three joints per finger, thumb first.
    Uses x, y and, where given, z."""
    points = _check(landmarks, HAND_LANDMARKS, "hand")
    chains = [(WRIST, *finger) for finger in FINGERS]
    bends = []
    for chain in chains:
        for a, joint, b in zip(chain[:-2], chain[1:-1], chain[2:], strict=True):
            bends.append(np.pi - _angle(points[a], points[joint], points[b]))
    return np.asarray(bends)


def _angle(a: np.ndarray, joint: np.ndarray, b: np.ndarray) -> float:
    """The angle at ``joint`` between the segments to ``a`` and to ``b`` (radians; pi = straight)."""
    u, v = a - joint, b - joint
    norms = np.linalg.norm(u) * np.linalg.norm(v)
    if norms < MIN_SCALE**2:
        return float(np.pi)
    return float(np.arccos(np.clip(np.dot(u, v) / norms, -1.0, 1.0)))


def limb_angles(landmarks: np.ndarray) -> np.ndarray:
    """(8,) radians in the picture plane: elbows, shoulders, hips, knees (left, right each; pi = straight)."""
    points = _check(landmarks, BODY_LANDMARKS, "body")[:, :2]
    return np.asarray([_angle(points[a], points[j], points[b]) for a, j, b in LIMB_ANGLES])


def hand_features(landmarks: np.ndarray | None) -> np.ndarray:
    """(HAND_DIM,) float32 features of one hand, all zeros when there is none."""
    out = np.zeros(HAND_DIM, dtype=np.float32)
    if landmarks is None:
        return out
    points = _check(landmarks, HAND_LANDMARKS, "hand")
    centre, scale = hand_centre_scale(points)
    if scale < MIN_SCALE:
        return out
    relative = (points[:, :2] - centre) / scale  # (21, 2) palm lengths
    out[0] = 1.0
    out[1 : 1 + 2 * HAND_LANDMARKS] = relative.reshape(-1)
    out[1 + 2 * HAND_LANDMARKS : -2] = joint_bends(points)
    out[-2:] = _direction(points[WRIST], points[MIDDLE_KNUCKLE])
    return out


def body_features(landmarks: np.ndarray | None, visibility: np.ndarray | None = None) -> np.ndarray:
    """(BODY_DIM,) float32 features of one body, all zeros when there is none. ``visibility`` (33,) in
    [0, 1] (ones when not given)."""
    out = np.zeros(BODY_DIM, dtype=np.float32)
    if landmarks is None:
        return out
    points = _check(landmarks, BODY_LANDMARKS, "body")
    centre, scale = body_centre_scale(points)
    if scale < MIN_SCALE:
        return out
    seen = np.ones(BODY_LANDMARKS) if visibility is None else np.asarray(visibility, dtype=np.float64).reshape(-1)
    if seen.shape != (BODY_LANDMARKS,):
        raise ValueError(f"visibility must be ({BODY_LANDMARKS},), got {seen.shape}")
    relative = (points[:, :2] - centre) / scale  # (33, 2) torso lengths
    shoulders = (points[L_SHOULDER, :2] + points[R_SHOULDER, :2]) / 2
    i = 1 + 2 * BODY_LANDMARKS
    out[0] = 1.0
    out[1:i] = relative.reshape(-1)
    out[i : i + BODY_LANDMARKS] = seen
    out[i + BODY_LANDMARKS : -2] = limb_angles(points)
    out[-2:] = _direction(centre, shoulders)
    return out


def motion(features: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """The change of a feature vector since the previous frame; zeros unless both frames have the hand or
    body (presence flag, element 0, set in both): appearing or vanishing is not motion."""
    features = np.asarray(features, dtype=np.float32)
    if previous is None or features[0] == 0 or previous[0] == 0:
        return np.zeros_like(features)
    change = features - np.asarray(previous, dtype=np.float32)
    change[0] = 0.0
    return change


def centre_velocity(centre: np.ndarray | None, previous: np.ndarray | None, scale: float) -> np.ndarray:
    """(2,) float32: how far the centre moved since the previous frame, in units of ``scale`` (the body's
    torso or the hand's palm length, pixels); zeros when either frame lacks it."""
    if centre is None or previous is None or scale < MIN_SCALE:
        return np.zeros(2, dtype=np.float32)
    return ((np.asarray(centre, dtype=np.float64)[:2] - np.asarray(previous, dtype=np.float64)[:2]) / scale).astype(
        np.float32
    )
