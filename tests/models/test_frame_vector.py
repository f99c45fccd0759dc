"""Per-frame keypoint vectors: what a taught hands / body model reads, and how it explains its decision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcrn.models import keypoint_features as kf
from dcrn.models.dcrn import DCRN
from dcrn.models.explain import shares
from dcrn.models.frame_vector import (
    BODY_SLOT_DIM,
    HAND_SLOT_DIM,
    BodyPoints,
    ClipKeypoints,
    HandPoints,
    KeypointFrame,
    VectorState,
    clip_vectors,
    feature_names,
    keypoint_vector,
    vector_dim,
)
from dcrn.models.teach import features_config


def hand(scale: float, x: float = 100.0, y: float = 100.0, right: float = 0.9) -> HandPoints:
    """A flat hand, fingers up: wrist at (x, y), palm length ``scale`` pixels."""
    points = np.zeros((21, 3), np.float32)
    for finger, chain in enumerate(kf.FINGERS):
        for joint, index in enumerate(chain):
            points[index, :2] = (x + (finger - 2) * 0.3 * scale, y - (0.6 + 0.35 * joint) * scale)
    points[kf.MIDDLE_KNUCKLE, :2] = (x, y - scale)
    points[0, :2] = (x, y)
    return HandPoints(points, right)


def person(dx: float = 0.0, dy: float = 0.0, lying: bool = False) -> BodyPoints:
    rng = np.random.default_rng(3)
    points = rng.uniform(-40, 40, size=(33, 3)).astype(np.float32)
    points[[kf.L_HIP, kf.R_HIP], :2] = [[-10, 0], [10, 0]]
    points[[kf.L_SHOULDER, kf.R_SHOULDER], :2] = [[-15, -60], [15, -60]]
    if lying:
        points[:, :2] = points[:, :2] @ np.array([[0, 1], [-1, 0]], np.float32)  # turned 90 degrees
    points[:, :2] += (300 + dx, 300 + dy)
    return BodyPoints(points, np.ones(33, np.float32))


def test_nobody_in_view_is_a_valid_all_zero_input():
    vector, state = keypoint_vector(KeypointFrame(), ("hands", "body"))
    assert vector.shape == (vector_dim(("hands", "body")),) and not vector.any()
    assert state.body is None and state.hands == (None, None)


def test_the_larger_hand_takes_the_first_slot_whichever_hand_it_is():
    small, large = hand(20, x=50, right=0.9), hand(60, x=300, right=0.1)
    vector, _ = keypoint_vector(KeypointFrame(hands=(small, large)), ("hands",))
    first, second = vector[:HAND_SLOT_DIM], vector[HAND_SLOT_DIM:]
    assert first[0] == 1.0 and second[0] == 1.0
    assert first[-1] == pytest.approx(0.1) and second[-1] == pytest.approx(0.9)  # the right-hand score rides along


def test_positions_hold_across_places_and_sizes():
    near, _ = keypoint_vector(KeypointFrame(hands=(hand(80, x=500, y=400),)), ("hands",))
    far, _ = keypoint_vector(KeypointFrame(hands=(hand(20, x=60, y=90),)), ("hands",))
    assert np.allclose(near, far, atol=1e-5)


def test_motion_is_the_change_since_the_previous_frame_and_appearing_is_not_motion():
    kinds = ("body",)
    first, state = keypoint_vector(KeypointFrame(people=(person(),)), kinds)
    dim = kf.BODY_DIM
    assert not first[dim : 2 * dim].any() and not first[-2:].any()  # no previous frame: no change, no velocity
    moved, state = keypoint_vector(KeypointFrame(people=(person(dy=30),)), kinds, state)
    torso = 60.0  # hip centre to shoulder centre, pixels
    assert moved[-2:] == pytest.approx([0.0, 30 / torso], abs=1e-5)  # the body dropped half a torso
    assert not moved[dim : 2 * dim].any()  # a pure shift leaves the body's own shape unchanged
    lying, state = keypoint_vector(KeypointFrame(people=(person(lying=True),)), kinds, state)
    assert np.abs(lying[dim : 2 * dim]).max() > 0.5  # turning to lie down changes positions and torso direction
    gone, state = keypoint_vector(KeypointFrame(), kinds, state)
    assert not gone.any() and state.body is None


def test_a_clip_of_keypoints_round_trips_through_its_cached_arrays():
    frames = [
        KeypointFrame(hands=(hand(40),), people=(person(),)),
        KeypointFrame(),
        KeypointFrame(hands=(hand(40), hand(30, x=200)), people=(person(dx=5),)),
    ]
    clip = ClipKeypoints.from_frames(frames)
    again = ClipKeypoints.from_arrays(clip.to_arrays())
    for kinds in (("hands",), ("body",), ("hands", "body")):
        assert np.array_equal(clip_vectors(again.frames(), kinds), clip_vectors(frames, kinds))
    assert again.found() == pytest.approx({"hands": 2 / 3, "body": 2 / 3})
    arrays = clip.to_arrays() | {"body": np.zeros((3, 32, 3), np.float32)}  # a damaged cache file
    with pytest.raises(ValueError, match="body has shape"):
        ClipKeypoints.from_arrays(arrays)


@pytest.mark.parametrize("kinds", [("flow",), ("hands",), ("body",), ("flow", "hands", "body")])
def test_every_element_of_the_vector_has_a_readable_name(kinds):
    names = feature_names(kinds)
    assert len(names) == vector_dim(kinds)
    if "body" in kinds:
        assert {"left arm", "right leg", "torso", "whole-body movement"} <= set(names)
    if "hands" in kinds:
        assert "hand 1: index finger" in names and "hand 2: thumb" in names
    assert BODY_SLOT_DIM == 2 * kf.BODY_DIM + 2


def test_the_explanation_splits_the_winning_class_lead_into_parts():
    model = DCRN(features_config(("stand", "fall"), ("body",))).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.head[-1].weight.copy_(torch.randn(model.head[-1].weight.shape, generator=generator) * 0.01)
        model.head[-1].bias.zero_()
    vectors = clip_vectors([KeypointFrame(people=(person(dy=4 * t),)) for t in range(20)], ("body",))
    state = model.initial_state(1)
    for u in vectors:
        logits, state = model.step(torch.from_numpy(u)[None], state)
    explained = shares(model, state[0][0].numpy(), top=100)
    assert explained["label"] == model.config.class_names[int(logits.argmax())]
    assert sum(abs(share) for _, share in explained["parts"]) == pytest.approx(1.0, abs=1e-3)
    assert {name for name, _ in explained["parts"]} <= set(feature_names(("body",)))


def test_a_fresh_vector_state_is_fresh():
    assert VectorState().fresh
    _, state = keypoint_vector(KeypointFrame(people=(person(),)), ("body",))
    assert not state.fresh
