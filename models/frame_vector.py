"""One frame's keypoints -> the feature vector a ``features`` model steps on, with the previous frame as state.

The keypoint encoders (``dcrn.engine.keypoints``) give hands and bodies in frame pixels; a taught model reads,
per frame, one vector that concatenates the kinds it was taught on (``DCRNConfig.features``, in
``FEATURE_KINDS`` order):

- ``flow``: the whole picture's grid optical flow at 96 px (:mod:`dcrn.models.flow_cell`; computed from the
  image, not from keypoints, see :mod:`dcrn.models.teach_features`);
- ``hands``: two hand slots, the larger hand (by palm length) first, so a one-handed gesture always lands in
  slot 0 whichever hand makes it. Per slot: :func:`~dcrn.models.keypoint_features.hand_features`, its change
  since the previous frame, the wrist's velocity in palm lengths per frame, and the right-hand score;
- ``body``: the person kept (the largest, see docs/KEYPOINTS.md): body features, their change, the hip
  centre's velocity in torso lengths per frame.

An absent hand or body is all zeros (so nobody in view is a valid input and the taught background class
answers it), and appearing or vanishing is not motion. This module is pure numpy and shared by teaching
(landmarks cached per clip) and the live pipeline (landmarks from the encoders), so both compute the same
vectors. :func:`feature_names` names what every element is about, for explanations in the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from . import keypoint_features as kf
from .config import FEATURE_KINDS

HAND_SLOTS = 2
HAND_SLOT_DIM = 2 * kf.HAND_DIM + 2 + 1  # features, their change, wrist velocity, right-hand score
BODY_SLOT_DIM = 2 * kf.BODY_DIM + 2  # features, their change, hip-centre velocity
FLOW_SIZE = 96  # the flow is measured on frames resized to 96 x 96 (as `dcrn teach` always did)


@dataclass(frozen=True)
class HandPoints:
    landmarks: np.ndarray  # (21, 3) frame pixels (x, y, z)
    right: float  # the model's score that it is a right hand (as the camera sees it)


@dataclass(frozen=True)
class BodyPoints:
    landmarks: np.ndarray  # (33, 3) frame pixels (x, y, z)
    visibility: np.ndarray  # (33,) in [0, 1]
    id: int = 0  # the track's id (several people)


@dataclass(frozen=True)
class KeypointFrame:
    """What the keypoint encoders found in one frame (nothing found: empty tuples)."""

    hands: tuple[HandPoints, ...] = ()
    people: tuple[BodyPoints, ...] = ()


@dataclass(frozen=True)
class VectorState:
    """The previous frame's per-slot features and centres (None where that slot was empty); fresh = ()."""

    hands: tuple = ()  # per slot: (features, centre, scale) or None
    body: tuple | None = None

    @property
    def fresh(self) -> bool:
        return not self.hands and self.body is None


@lru_cache(maxsize=1)
def flow_dim() -> int:
    """Elements of one frame's flow features at FLOW_SIZE px."""
    from .flow_cell import FlowMemory

    return FlowMemory((1, FLOW_SIZE, FLOW_SIZE)).in_features


def kind_dim(kind: str) -> int:
    return {"flow": flow_dim(), "hands": HAND_SLOTS * HAND_SLOT_DIM, "body": BODY_SLOT_DIM}[kind]


def vector_dim(kinds: Sequence[str]) -> int:
    """Length of the per-frame vector of a model taught on ``kinds``."""
    return sum(kind_dim(k) for k in kinds)


def hand_order(hands: Sequence[HandPoints]) -> list[HandPoints]:
    """The hands in slot order: the larger (longer palm, nearer the camera) first; at most HAND_SLOTS."""
    return sorted(hands, key=lambda h: -kf.hand_centre_scale(h.landmarks)[1])[:HAND_SLOTS]


def keypoint_vector(
    frame: KeypointFrame, kinds: Sequence[str], state: VectorState = VectorState()
) -> tuple[np.ndarray, VectorState]:
    """The ``hands`` / ``body`` part of one frame's vector (kinds other than those are left out) and the next
    state. (D,) float32."""
    parts, hands_state, body_state = [], state.hands, state.body
    if "hands" in kinds:
        ordered = hand_order(frame.hands)
        slots = []
        for k in range(HAND_SLOTS):
            previous = state.hands[k] if k < len(state.hands) else None
            hand = ordered[k] if k < len(ordered) else None
            vector, slot = _slot(
                None if hand is None else hand.landmarks,
                previous,
                kf.hand_features,
                kf.hand_centre_scale,
            )
            parts += [vector, np.float32([0.0 if hand is None else hand.right])]
            slots.append(slot)
        hands_state = tuple(slots)
    if "body" in kinds:
        person = frame.people[0] if frame.people else None
        vector, body_state = _slot(
            None if person is None else person.landmarks,
            state.body,
            lambda points: kf.body_features(points, None if person is None else person.visibility),
            kf.body_centre_scale,
        )
        parts.append(vector)
    out = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    return out, VectorState(hands_state, body_state)


def _slot(points, previous, features_of, centre_scale):
    """features, their change and the centre's velocity of one hand / body slot -> (vector, slot state)."""
    features = features_of(points)
    if points is None or features[0] == 0:
        dim = 2 * len(features) + 2
        return np.zeros(dim, np.float32), None
    centre, scale = centre_scale(points)
    before = None if previous is None else previous[0]
    change = kf.motion(features, before)
    velocity = kf.centre_velocity(centre, None if previous is None else previous[1], scale)
    return np.concatenate([features, change, velocity]), (features, centre, scale)


def clip_vectors(frames: Sequence[KeypointFrame], kinds: Sequence[str]) -> np.ndarray:
    """A clip's keypoint vectors from a fresh state: (T, D) float32 (D = the hands and body kinds' sizes)."""
    state, out = VectorState(), []
    for frame in frames:
        vector, state = keypoint_vector(frame, kinds, state)
        out.append(vector)
    dim = sum(kind_dim(k) for k in kinds if k != "flow")
    return np.stack(out) if out else np.zeros((0, dim), np.float32)


# -- what each element is about (explanations) ----------------------------------------------------------

FINGER_NAMES = ("thumb", "index finger", "middle finger", "ring finger", "little finger")
_BODY_PART = {  # MediaPipe pose landmark -> body part, from the person's own side
    **{i: "head" for i in range(11)},
    **{i: "left arm" for i in (11, 13, 15, 17, 19, 21)},
    **{i: "right arm" for i in (12, 14, 16, 18, 20, 22)},
    **{i: "left leg" for i in (23, 25, 27, 29, 31)},
    **{i: "right leg" for i in (24, 26, 28, 30, 32)},
}
_LIMB_PART = ("left arm", "right arm", "left arm", "right arm", "left leg", "right leg", "left leg", "right leg")


def _hand_names(prefix: str) -> list[str]:
    finger_of = {i: FINGER_NAMES[f] for f, chain in enumerate(kf.FINGERS) for i in chain}
    features = ["hand in view"]
    for i in range(kf.HAND_LANDMARKS):
        features += [finger_of.get(i, "palm")] * 2
    features += [FINGER_NAMES[f] for f in range(5) for _ in range(3)]
    features += ["palm direction"] * 2
    names = features + features + ["hand movement"] * 2 + ["handedness"]
    return [f"{prefix}: {n}" for n in names]


def _body_names() -> list[str]:
    features = ["body in view"]
    for i in range(kf.BODY_LANDMARKS):
        features += [_BODY_PART[i]] * 2
    features += [_BODY_PART[i] for i in range(kf.BODY_LANDMARKS)]  # visibility
    features += list(_LIMB_PART)
    features += ["torso"] * 2
    return features + features + ["whole-body movement"] * 2


@lru_cache(maxsize=8)
def feature_names(kinds: tuple[str, ...]) -> tuple[str, ...]:
    """A readable name (a finger, a limb, "picture motion", ...) for every element of the vector."""
    names: list[str] = []
    for kind in kinds:
        if kind == "flow":
            names += ["picture motion"] * flow_dim()
        elif kind == "hands":
            names += _hand_names("hand 1") + _hand_names("hand 2")
        elif kind == "body":
            names += _body_names()
    return tuple(names)


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """``kinds`` in FEATURE_KINDS order; ValueError for an unknown one."""
    unknown = [k for k in kinds if k not in FEATURE_KINDS]
    if unknown:
        raise ValueError(f"unknown feature kinds {unknown}; known: {', '.join(FEATURE_KINDS)}")
    return tuple(k for k in FEATURE_KINDS if k in kinds)


@dataclass
class ClipKeypoints:
    """A clip's keypoints as arrays (the per-clip cache of teaching): NaN where nothing was found."""

    hands: np.ndarray  # (T, 2, 21, 3) float32, slot order as found
    right: np.ndarray  # (T, 2) float32
    body: np.ndarray  # (T, 33, 3) float32
    visibility: np.ndarray  # (T, 33) float32
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_frames(cls, frames: Sequence[KeypointFrame]) -> ClipKeypoints:
        t = len(frames)
        hands = np.full((t, HAND_SLOTS, kf.HAND_LANDMARKS, 3), np.nan, np.float32)
        right = np.zeros((t, HAND_SLOTS), np.float32)
        body = np.full((t, kf.BODY_LANDMARKS, 3), np.nan, np.float32)
        visibility = np.zeros((t, kf.BODY_LANDMARKS), np.float32)
        for i, frame in enumerate(frames):
            for k, hand in enumerate(frame.hands[:HAND_SLOTS]):
                hands[i, k] = hand.landmarks[:, :3]
                right[i, k] = hand.right
            if frame.people:
                body[i] = frame.people[0].landmarks[:, :3]
                visibility[i] = frame.people[0].visibility
        return cls(hands, right, body, visibility)

    def frames(self) -> list[KeypointFrame]:
        out = []
        for i in range(len(self.body)):
            hands = tuple(
                HandPoints(self.hands[i, k], float(self.right[i, k]))
                for k in range(HAND_SLOTS)
                if np.isfinite(self.hands[i, k]).all()
            )
            people = (BodyPoints(self.body[i], self.visibility[i]),) if np.isfinite(self.body[i]).all() else ()
            out.append(KeypointFrame(hands, people))
        return out

    def found(self) -> dict[str, float]:
        """Share of frames with a hand / a body found."""
        t = max(len(self.body), 1)
        return {
            "hands": float(np.isfinite(self.hands[:, 0]).all(axis=(1, 2)).sum() / t),
            "body": float(np.isfinite(self.body).all(axis=(1, 2)).sum() / t),
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"hands": self.hands, "right": self.right, "body": self.body, "visibility": self.visibility}

    @classmethod
    def from_arrays(cls, arrays) -> ClipKeypoints:
        clip = cls(*(np.asarray(arrays[k], np.float32) for k in ("hands", "right", "body", "visibility")))
        t = len(clip.body)
        shapes = {
            "hands": (t, HAND_SLOTS, kf.HAND_LANDMARKS, 3),
            "right": (t, HAND_SLOTS),
            "body": (t, kf.BODY_LANDMARKS, 3),
            "visibility": (t, kf.BODY_LANDMARKS),
        }
        for name, shape in shapes.items():
            if getattr(clip, name).shape != shape:
                raise ValueError(f"keypoints {name} has shape {getattr(clip, name).shape}, expected {shape}")
        return clip
