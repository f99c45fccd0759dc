"""The front end of a ``features`` model: full frames -> the per-frame vector its step graph reads.

A model taught on hands, bodies (and the picture's flow) steps on vectors made outside its graph
(:mod:`dcrn.models.frame_vector`): the keypoint graphs are the per-frame CNNs of such a DCRN, and they, the
tracked regions and the previous frame's features are that stream's explicit state (:class:`FrontState`),
returned by every step and passed into the next, like the recurrent state. One :class:`FrontEnd` serves any
number of streams; :class:`ClipReader` runs it over a clip for teaching (the same code, so the vectors a
model is taught on are the ones it sees live).

Frames wider than ``MAX_WIDTH`` are scaled down first (the keypoint graphs read 192-256 px crops: a larger
frame costs decoding and warping time and finds nothing more), here and in teaching alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from dcrn.engine.keypoints.body import BodyConfig, BodyEncoder, BodyResult
from dcrn.engine.keypoints.hands import HandsConfig, HandsEncoder, HandsResult
from dcrn.engine.keypoints.model_files import graph_path, sha256_of
from dcrn.engine.keypoints.runtime import RuntimeOptions
from dcrn.engine.keypoints.tracking import TrackState
from dcrn.models.config import DCRNConfig
from dcrn.models.dcrn import DCRN
from dcrn.models.frame_vector import (
    FLOW_SIZE,
    BodyPoints,
    ClipKeypoints,
    HandPoints,
    KeypointFrame,
    VectorState,
    check_kinds,
    keypoint_vector,
)
from dcrn.models.teach_features import flow_step
from dcrn.models.video_io import iter_video, resize_frames

MAX_WIDTH = 640  # frames are scaled down to this width before the keypoint graphs read them


@dataclass(frozen=True)
class FrontState:
    """One stream's state in front of the step graph; ``FrontState()`` is a fresh stream."""

    hands: TrackState = field(default_factory=TrackState)
    body: TrackState = field(default_factory=TrackState)
    vectors: VectorState = field(default_factory=VectorState)
    flow: torch.Tensor | None = None  # the previous frame's brightness map (1, 1, 96, 96)
    people: tuple[tuple[int, VectorState], ...] = ()  # several people: each tracked person's vector state


@dataclass(frozen=True)
class FrontResult:
    """What one frame gave: the step's input and what was found (frame pixels of the frame passed in)."""

    vector: np.ndarray  # (F,) float32: the largest person's (or nobody's)
    keypoints: KeypointFrame
    hands: HandsResult | None
    body: BodyResult | None
    scale: float  # frame pixels per keypoint pixel (1.0 unless the frame was scaled down)
    # (person id, vector) per person when several are followed (FrontEnd(people > 1)); else ((None, vector),).
    # Nobody in view: ((None, the nobody vector),).
    rows: tuple[tuple[int | None, np.ndarray], ...] = ()


def flow_encoder() -> DCRN:
    """The fixed luma + grid-flow network whose per-frame flow a ``flow`` kind reads (as taught)."""
    config = DCRNConfig(
        num_classes=1, encoder="luma", cell="flow_memory", input_size=FLOW_SIZE, mean=(0.0,) * 3, std=(1.0,) * 3
    )
    return DCRN(config).eval()


def scaled(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """The frame at most MAX_WIDTH wide (area interpolation) and the factor to scale its points back."""
    height, width = frame.shape[:2]
    if width <= MAX_WIDTH:
        return frame, 1.0
    size = (MAX_WIDTH, max(1, round(height * MAX_WIDTH / width)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), width / MAX_WIDTH


class FrontEnd:
    """Per-frame vectors of the kinds ``kinds`` (FEATURE_KINDS order) from (H, W, 3) uint8 RGB frames."""

    def __init__(
        self,
        kinds: Sequence[str],
        *,
        hands: HandsConfig | None = None,
        body: BodyConfig | None = None,
        runtime: RuntimeOptions | None = None,
        people: int = 1,
    ) -> None:
        self.kinds = check_kinds(kinds)
        runtime = runtime or RuntimeOptions()
        if people < 1:
            raise ValueError(f"people must be at least 1, got {people}")
        self.people = people if "body" in self.kinds else 1  # several people: each their own vector (rows)
        self.hands = HandsEncoder(hands or HandsConfig(runtime=runtime)) if "hands" in self.kinds else None
        body = body or BodyConfig(max_people=self.people, runtime=runtime)
        self.body = BodyEncoder(body) if "body" in self.kinds else None
        self.flow = flow_encoder() if "flow" in self.kinds else None

    @classmethod
    def for_model(cls, config: DCRNConfig, *, threads: int = 1, people: int = 1) -> FrontEnd:
        return cls(config.features, runtime=RuntimeOptions(threads=max(1, threads)), people=people)

    @property
    def recipe(self) -> str:
        """What decides the keypoints: the graphs (by content) and the encoders' settings."""
        parts: dict = {"max_width": MAX_WIDTH}
        for name, encoder in (("hands", self.hands), ("body", self.body)):
            if encoder is not None:
                cfg = encoder.config
                graphs = [
                    sha256_of(graph_path(g, cache_dir=cfg.runtime.cache_dir))[:16]
                    for g in (cfg.detector, cfg.landmarks)
                ]
                settings = {k: v for k, v in vars(cfg).items() if k != "runtime"}
                parts[name] = [graphs, settings, cfg.runtime.precision]
        return json.dumps(parts, sort_keys=True, default=str)

    @torch.no_grad()
    def step(self, frame: np.ndarray, state: FrontState) -> tuple[FrontResult, FrontState]:
        """One frame (H, W, 3) uint8 RGB and the stream's state -> the step's input vector, what was found,
        and the next state. A frame of another size than the last starts the tracking afresh."""
        small, factor = scaled(frame)
        hands = body = None
        hands_state, body_state = state.hands, state.body
        if self.hands is not None:
            hands, hands_state = self.hands.step(small, state.hands)
        if self.body is not None:
            body, body_state = self.body.step(small, state.body)
        found = KeypointFrame(
            hands=() if hands is None else tuple(HandPoints(h.landmarks, h.right) for h in hands.hands),
            people=() if body is None else tuple(BodyPoints(p.landmarks, p.visibility, p.id) for p in body.people),
        )
        largest = KeypointFrame(found.hands, found.people[:1])  # people come largest first with one followed
        vector, vectors = keypoint_vector(largest, self.kinds, state.vectors)
        flow, flow_prev = np.zeros(0, np.float32), state.flow
        if self.flow is not None:
            flow, flow_prev = flow_step(self.flow, resize_frames(frame[None], FLOW_SIZE)[0], state.flow)
        rows, people = [(None, vector)], ()
        if self.people > 1 and found.people:  # each person: their own body features and change, shared the rest
            before = dict(state.people)
            rows, people = [], []
            for person in found.people:
                own, own_state = keypoint_vector(
                    KeypointFrame(found.hands, (person,)), self.kinds, before.get(person.id, VectorState())
                )
                rows.append((person.id, own))
                people.append((person.id, own_state))
        rows = tuple((who, np.concatenate([flow, v]).astype(np.float32)) for who, v in rows)
        result = FrontResult(np.concatenate([flow, vector]).astype(np.float32), found, hands, body, factor, rows)
        return result, FrontState(hands_state, body_state, vectors, flow_prev, tuple(people))


class ClipReader:
    """Finds the hands and body in every frame of a clip from a fresh state (teaching's KeypointReader).

    ``process_safe``: it pickles as its settings alone and compiles its graphs again where it is unpickled,
    so teach can read clips in a process per core."""

    process_safe = True

    def __init__(self, runtime: RuntimeOptions | None = None) -> None:
        self.runtime = runtime
        self.front = FrontEnd(("hands", "body"), runtime=runtime)
        self.recipe = self.front.recipe

    def __getstate__(self) -> dict:
        return {"runtime": self.runtime}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["runtime"])

    def __call__(self, path: Path) -> ClipKeypoints:
        frames, _ = iter_video(Path(path))  # decoded one at a time: a long clip is never held whole
        state, found = FrontState(), []
        for frame in frames:
            result, state = self.front.step(frame, state)
            found.append(result.keypoints)
        return ClipKeypoints.from_frames(found)


_FRONTS: dict[tuple[str, ...], FrontEnd] = {}


def clip_inputs(model: DCRN, path: Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """A ``features`` model's per-frame vectors of a clip from a fresh state (``dcrn eval``'s
    ``EvalOptions.vectors``) -> ((T, F) float32, the clip's frame rate)."""
    kinds = tuple(model.config.features)
    front = _FRONTS.get(kinds)
    if front is None:
        front = _FRONTS[kinds] = FrontEnd(kinds)
    frames, fps = iter_video(Path(path), None, max_frames)
    state, vectors = FrontState(), []
    for frame in frames:
        result, state = front.step(frame, state)
        vectors.append(result.vector)
    return np.stack(vectors) if vectors else np.zeros((0, *model.input_shape), np.float32), fps
