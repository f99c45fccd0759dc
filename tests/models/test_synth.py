"""The synthetic action generator: determinism, label correctness, temporal symmetry, speed."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest

from dcrn.models.synth import CLASSES, HFLIP, OPPOSITE, SyntheticActionStream, _polygon, clip_poses, render_clip

SIZE = (60, 80)


def test_render_clip_is_deterministic_for_a_seed():
    a = render_clip("rotate_cw", seed=3, num_frames=8, size=SIZE)
    b = render_clip("rotate_cw", seed=3, num_frames=8, size=SIZE)
    c = render_clip("rotate_cw", seed=4, num_frames=8, size=SIZE)
    assert a.shape == (8, *SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", [c for c in CLASSES if OPPOSITE[c] != c])
def test_reversing_a_clip_gives_the_opposite_class(name):
    forward = render_clip(name, seed=11, num_frames=12, size=SIZE)
    opposite = render_clip(OPPOSITE[name], seed=11, num_frames=12, size=SIZE)
    assert np.array_equal(forward[::-1], opposite)


def test_time_reversal_and_mirror_maps_are_involutions():
    assert set(OPPOSITE) == set(CLASSES) == set(HFLIP)
    for name in CLASSES:
        assert OPPOSITE[OPPOSITE[name]] == name
        assert HFLIP[HFLIP[name]] == name


def _unwrapped(values: list[float], period: float) -> np.ndarray:
    steps = np.diff(values)
    steps = (steps + period / 2) % period - period / 2  # undo wrap-around jumps
    return np.concatenate([[values[0]], values[0] + np.cumsum(steps)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_class_moves_the_actor_as_its_name_says(seed):
    h, w = SIZE
    for name in CLASSES:
        poses = clip_poses(name, seed, 20, size=SIZE)
        x = _unwrapped([p["x"] for p in poses], w)
        y = _unwrapped([p["y"] for p in poses], h)
        r = np.log([p["radius"] for p in poses])
        angle = _unwrapped([p["angle"] for p in poses], 2 * math.pi)
        moves = {
            "dx": np.sign(np.round(np.diff(x), 6)),
            "dy": np.sign(np.round(np.diff(y), 6)),
            "dr": np.sign(np.round(np.diff(r), 6)),
            "da": np.sign(np.round(np.diff(angle), 6)),
        }
        expected = {"dx": 0, "dy": 0, "dr": 0, "da": 0}
        expected.update(
            {
                "move_left": {"dx": -1},
                "move_right": {"dx": 1},
                "move_up": {"dy": -1},  # image y grows downwards
                "move_down": {"dy": 1},
                "rotate_cw": {"da": 1},  # increasing angle turns clockwise on screen (y down)
                "rotate_ccw": {"da": -1},
            }.get(name, {})
        )
        expected.update({"grow": {"dr": 1}, "shrink": {"dr": -1}}.get(name, {}))
        for key, want in expected.items():
            assert (moves[key] == want).all(), f"{name}: {key} should be {want}, got {moves[key]}"
        visible = [p["visible"] for p in poses]
        assert (len(set(visible)) > 1) == (name == "blink"), name


def _in_box(pose: dict, size: tuple[int, int], slack: float = 1e-6) -> bool:
    """The actor's centre is in the central 80% of the frame (give or take ``slack`` of its size)."""
    h, w = size
    return (0.1 - slack) * w <= pose["x"] <= (0.9 + slack) * w and (0.1 - slack) * h <= pose["y"] <= (0.9 + slack) * h


@pytest.mark.parametrize("seed", range(5))
def test_the_actor_stays_in_view_for_a_whole_clip(seed):
    # 48 frames is `dcrn synth`'s clip length: every class's whole path fits in the frame's central box.
    for name in CLASSES:
        poses = clip_poses(name, seed, 48, size=(240, 320))
        assert all(_in_box(p, (240, 320)) for p in poses), name
        radii = [p["radius"] for p in poses]
        assert min(radii) >= 0.12 * 240 - 1e-6 and max(radii) <= 0.3 * 240 + 1e-6, name


def test_the_actor_stays_in_view_in_a_stream():
    stream = SyntheticActionStream(seed=3, size=SIZE, segment_s=(1.0, 3.0), scene_change=0.2)
    labels = []
    for _ in range(30 * 60):
        _, label = stream.read()
        labels.append(label)
        # An action ends when the actor reaches the box's edge: one frame's motion (1.7%) of overshoot at most.
        assert _in_box(stream.actor, SIZE, slack=0.02), (stream.frame_index, stream.actor)
    assert set(labels) == set(range(len(CLASSES)))  # moves still happen, only shortened near an edge


def test_actor_shapes_turn_about_their_own_centre_and_are_never_needles():
    # The actor rotates about the origin of its outline: the origin must lie inside it (else "rotating"
    # looks like orbiting) and the shape must have body (a sliver barely shows at 64 px).
    for seed in range(200):
        shape = _polygon(np.random.default_rng(seed)).astype(np.float32)
        assert cv2.contourArea(shape) >= 0.2 * math.pi, seed
        assert cv2.pointPolygonTest(shape, (0.0, 0.0), measureDist=True) > 0.1, seed
        assert np.hypot(shape[:, 0], shape[:, 1]).max() <= 1.07, seed  # a box's corners reach 1.06


def test_stream_is_deterministic_and_labels_change_between_segments():
    a = SyntheticActionStream(seed=7, size=SIZE, segment_s=(0.2, 0.4))
    b = SyntheticActionStream(seed=7, size=SIZE, segment_s=(0.2, 0.4))
    frames_a, labels_a = a.read_many(120)
    frames_b, labels_b = b.read_many(120)
    assert np.array_equal(frames_a, frames_b) and np.array_equal(labels_a, labels_b)
    assert a.labels == CLASSES and a.fps == 30.0
    runs = np.split(labels_a, np.flatnonzero(np.diff(labels_a)) + 1)
    assert len(runs) >= 6
    assert all(len(run) <= round(0.4 * 30) for run in runs)
    assert all(len(run) >= round(0.2 * 30) for run in runs[:-1])
    frame, label = a.read()
    assert frame.flags["C_CONTIGUOUS"] and frame.shape == (*SIZE, 3) and 0 <= label < len(CLASSES)


def test_stream_renders_full_size_frames_quickly():
    stream = SyntheticActionStream(seed=1)
    stream.read()
    started = time.perf_counter()
    for _ in range(60):
        frame, _ = stream.read()
    per_frame = (time.perf_counter() - started) / 60
    assert frame.shape == (240, 320, 3)
    assert per_frame < 0.02, f"{per_frame * 1e3:.1f} ms per frame"  # about 0.4 ms on an idle core


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown synthetic class"):
        render_clip("dance", 0, 4)
    with pytest.raises(ValueError, match="segment_s"):
        SyntheticActionStream(segment_s=(3.0, 1.0))
