"""The keypoint encoders on real frames: people and hands are found where they are and not where they are not,
the detector runs only when tracking is lost, and the tracked regions are explicit state.

Frames come from ``../shared/data``: GMDCSA24 ``Subject 1/Fall/13.mp4`` opens with a man standing facing the
camera, arms down, both hands in view (about 25 px across at 640x480); fight-cctv ``noFight/nofi075.mp4``
shows two people walking down a corridor; GMDCSA24 ``Subject 2/Fall/14.mp4`` someone who falls and lies
still. The frame with nobody in it is composed from real footage: the right-hand third of that GMDCSA24
frame (wall and door, 220x480), which the man does not reach.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from dcrn.engine.keypoints import model_files
from dcrn.engine.keypoints.anchors import (
    PALM_ANCHORS,
    POSE_ANCHORS,
    Detections,
    decode,
    ssd_anchors,
    weighted_nms,
)
from dcrn.engine.keypoints.body import BodyConfig, BodyEncoder
from dcrn.engine.keypoints.front import scaled
from dcrn.engine.keypoints.hands import HandsConfig, HandsEncoder
from dcrn.engine.keypoints.roi import Roi, associate, crop, hand_roi
from dcrn.engine.keypoints.runtime import Graph, to_tensor
from dcrn.engine.keypoints.tracking import TrackState
from dcrn.models.video_io import iter_video

STANDING = "gmdcsa24/Subject 1/Fall/13.mp4"
CORRIDOR = "fight-cctv/noFight/nofi075.mp4"
FALL = "gmdcsa24/Subject 2/Fall/14.mp4"
NOSE, L_WRIST, R_WRIST, L_HIP, R_HIP, L_ANKLE, R_ANKLE = 0, 15, 16, 23, 24, 27, 28


def read_frames(path: Path, count: int) -> list[np.ndarray]:
    """The first ``count`` frames as RGB uint8."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < count:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(frames) == count, f"{path} has fewer than {count} frames"
    return frames


@pytest.fixture(scope="module")
def standing(shared_dir) -> list[np.ndarray]:
    return read_frames(shared_dir / "data" / STANDING, 8)


@pytest.fixture(scope="module")
def body() -> BodyEncoder:
    return BodyEncoder()


@pytest.fixture(scope="module")
def hands() -> HandsEncoder:
    return HandsEncoder()


def test_body_is_found_where_a_person_stands(body, standing):
    result, state = body.step(standing[0], TrackState())
    assert result.detector_ran and len(result.people) == 1
    person = result.people[0]
    points = person.landmarks
    assert person.landmarks.shape == (33, 3) and person.visibility.shape == (33,)
    assert 230 < points[NOSE, 0] < 420 and points[NOSE, 1] < 100  # his head, at the top of the frame
    hips = points[[L_HIP, R_HIP], 1].mean()
    assert points[NOSE, 1] < hips < points[[L_ANKLE, R_ANKLE], 1].min()  # upright: head, hips, feet
    assert points[[L_ANKLE, R_ANKLE], 1].min() > 400
    assert person.visibility[[NOSE, L_HIP, R_HIP]].min() > 0.9
    assert len(state.tracks) == 1 and state.tracks[0].id == person.id


def test_no_body_and_no_hand_in_a_frame_without_a_person(body, hands, standing):
    wall = np.ascontiguousarray(standing[0][:, 420:])  # wall and door beside him (composed frame)
    people, state = body.step(wall, TrackState())
    found, hand_state = hands.step(wall, TrackState())
    assert people.people == () and found.hands == ()
    assert state.tracks == () and hand_state.tracks == ()


def test_the_body_detector_runs_only_on_the_first_of_consecutive_frames(body, standing):
    calls = body.detector.calls
    state = TrackState()
    ran = []
    for frame in standing:
        result, state = body.step(frame, state)
        ran.append(result.detector_ran)
        assert len(result.people) == 1
    assert ran == [True] + [False] * (len(standing) - 1)
    assert body.detector.calls - calls == 1
    assert body.landmark_graph.calls >= len(standing)


def test_the_state_carries_everything_between_frames(body, standing, shared_dir):
    _, state = body.step(standing[0], TrackState())
    first, _ = body.step(standing[1], state)
    other = read_frames(shared_dir / "data" / CORRIDOR, 1)[0]
    body.step(other, TrackState())  # another stream in between leaves this stream's state alone
    again, _ = body.step(standing[1], state)
    assert not first.detector_ran and not again.detector_ran
    np.testing.assert_array_equal(first.people[0].landmarks, again.people[0].landmarks)


def test_a_fresh_state_or_another_frame_size_restarts_detection(body, standing):
    _, state = body.step(standing[0], TrackState())
    calls = body.detector.calls
    restarted, _ = body.step(standing[1], TrackState())
    smaller = np.ascontiguousarray(standing[1][:, :400])  # another size: the regions no longer apply
    resized, _ = body.step(smaller, state)
    assert restarted.detector_ran and resized.detector_ran
    assert body.detector.calls - calls == 2
    assert len(restarted.people) == 1 and len(resized.people) == 1


def test_both_hands_are_found_with_their_handedness(hands, body, standing):
    result, _ = hands.step(standing[0], TrackState())
    assert len(result.hands) == 2
    people, _ = body.step(standing[0], TrackState())
    wrists = people.people[0].landmarks[[L_WRIST, R_WRIST], :2]  # the body model's own wrists
    for hand in result.hands:
        assert hand.landmarks.shape == (21, 3) and hand.presence > 0.8
        gap = np.linalg.norm(wrists - hand.landmarks[0, :2], axis=1)
        assert gap.min() < 15, gap  # the hand's wrist is one of the body's wrists
        his_right = gap.argmin() == 1
        assert (hand.right > 0.5) == his_right  # facing the camera, his right hand is on the image's left
    left_of_image = min(result.hands, key=lambda h: h.landmarks[0, 0])
    assert left_of_image.right > 0.5


def test_tracked_hands_need_no_palm_detection(hands, standing):
    calls = hands.detector.calls
    state = TrackState()
    for frame in standing[:6]:
        result, state = hands.step(frame, state)
        assert len(result.hands) == 2
    assert hands.detector.calls - calls == 1
    assert {t.id for t in state.tracks} == {0, 1}


def test_with_no_hand_in_view_the_palm_detector_runs_every_other_frame(hands, standing):
    height, width = standing[0].shape[:2]
    wall = cv2.resize(standing[0][:, 420:], (width, height))  # wall and door beside him, at his frames' size
    calls, state = hands.detector.calls, TrackState()
    for _ in range(5):
        result, state = hands.step(wall, state)
        assert result.hands == ()
    assert hands.detector.calls - calls == 3  # frames 0, 2, 4
    seen = []
    for frame in standing[:3]:  # he comes into view: his hands are found a frame later at most
        result, state = hands.step(frame, state)
        seen.append((len(result.hands), result.detector_ran))
    assert seen == [(0, False), (2, True), (2, False)]
    with pytest.raises(ValueError, match="idle_interval"):
        HandsEncoder(HandsConfig(idle_interval=0))


def test_several_people_get_their_own_tracks(shared_dir):
    several = BodyEncoder(BodyConfig(max_people=4, search_interval=5))
    state = TrackState()
    for frame in read_frames(shared_dir / "data" / CORRIDOR, 12):
        result, state = several.step(frame, state)
    ids = [p.id for p in result.people]
    assert len(ids) == 2 and len(set(ids)) == 2
    a, b = (p.landmarks[:, 0].mean() for p in result.people)
    assert abs(a - b) > 100  # two people side by side, not one person twice


def test_a_person_lying_down_after_a_fall_is_kept_in_the_region_last_read(shared_dir):
    # GMDCSA24 Subject 2 falls at about frame 110 and lies on the floor to the end (frame 168); the landmarks
    # of someone lying there predict regions where the model no longer sees them, the last region read does.
    frames = [scaled(f)[0] for f in iter_video(shared_dir / "data" / FALL)[0]]
    found = {}
    for hold in (True, False):
        encoder, state, seen, hips = BodyEncoder(BodyConfig(hold_region=hold)), TrackState(), [], []
        for frame in frames:
            result, state = encoder.step(frame, state)
            seen.append(len(result.people) == 1)
            if result.people:
                hips.append(result.people[0].landmarks[[L_HIP, R_HIP], :2].mean(0))
        found[hold] = np.mean(seen[-40:])
        if hold:
            assert np.ptp(np.array(hips[-40:]), axis=0).max() < 60  # one person lying still, not a wandering box
    assert found[True] == 1.0 and found[False] < 0.5, found


def test_the_landmark_graphs_give_the_same_numbers_without_the_outputs_left_out(body, hands, standing):
    """The encoders compile their landmark graphs without the outputs they do not read (the body's
    segmentation mask is a third of its work): what is left must be exactly what the whole graph gives."""
    _, state = body.step(standing[0], TrackState())
    (track,) = state.tracks
    for encoder, keep in ((body, (0, 1, 3)), (hands, (0, 1, 2))):
        pruned = encoder.landmark_graph
        whole = Graph(pruned.name)
        assert len(pruned._outputs) == len(keep) < len(whole._outputs)
        tensor = to_tensor(crop(standing[1], track.roi, pruned.input_size), 0.0, 1.0)  # a real person crop
        expected = whole(tensor)
        for got, index in zip(pruned(tensor), keep, strict=True):
            np.testing.assert_allclose(got, expected[index], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="distinct indices"):
        Graph("hand_landmark_lite.tflite", outputs=(0, 4))


def test_anchor_counts_match_the_detector_graphs(body, hands):
    assert len(ssd_anchors(PALM_ANCHORS)) == 2016 == len(hands.detector.anchors)
    assert len(ssd_anchors(POSE_ANCHORS)) == 2254 == len(body.detector.anchors)
    anchors = ssd_anchors(POSE_ANCHORS)
    assert anchors[:, :2].min() > 0 and anchors[:, :2].max() < 1 and np.all(anchors[:, 2:] == 1)


def test_decoding_puts_a_zero_offset_box_on_its_anchor():
    anchors = ssd_anchors(PALM_ANCHORS)
    raw = np.zeros((len(anchors), 18), dtype=np.float32)
    raw[7, 2:4] = 38.4  # 0.2 of the 192 px input
    scores = np.full(len(anchors), -10.0, dtype=np.float32)
    scores[7] = 3.0
    found = decode(raw, scores, anchors, 192, threshold=0.5)
    assert len(found) == 1 and found.scores[0] == pytest.approx(1 / (1 + np.exp(-3.0)))
    centre = anchors[7, :2]
    np.testing.assert_allclose(found.boxes[0], [*(centre - 0.1), *(centre + 0.1)], atol=1e-6)
    np.testing.assert_allclose(found.keypoints[0], np.tile(centre, (7, 1)), atol=1e-6)


def test_weighted_suppression_merges_overlaps_and_keeps_the_rest():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], dtype=np.float32)
    points = boxes[:, None, :2].copy()
    merged = weighted_nms(Detections(np.array([0.9, 0.6, 0.8], dtype=np.float32), boxes, points))
    assert len(merged) == 2 and merged.scores.tolist() == pytest.approx([0.9, 0.8])
    np.testing.assert_allclose(merged.boxes[0], [0.4, 0, 10.4, 10], atol=1e-5)  # 0.9 / 0.6 weighted mean
    np.testing.assert_allclose(merged.boxes[1], boxes[2])


def test_a_rotated_crop_and_its_projection_are_inverse():
    roi = Roi(cx=300.0, cy=200.0, size=120.0, angle=0.6)
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    cv2.circle(frame, (330, 230), 4, (255, 255, 255), -1)
    patch = crop(frame, roi, 224)
    ys, xs = np.nonzero(patch[:, :, 0] > 128)
    back = roi.to_frame(np.array([[xs.mean() / 224, ys.mean() / 224]], dtype=np.float32))[0]
    np.testing.assert_allclose(back, [330, 230], atol=1.0)
    matrix = roi.crop_matrix(224)
    np.testing.assert_allclose(matrix @ np.array([300.0, 200.0, 1.0]), [112, 112], atol=1e-9)


def test_a_hand_region_turns_the_hand_upright():
    wrist = np.array([100.0, 100.0])
    landmarks = np.zeros((21, 3), dtype=np.float32)
    for i in range(21):  # fingers pointing right of the wrist: the hand lies on its side
        landmarks[i, :2] = wrist + np.array([10.0 + 2.0 * i, (i % 5) - 2.0])
    landmarks[0, :2] = wrist
    roi = hand_roi(landmarks)
    assert roi.angle == pytest.approx(np.pi / 2, abs=0.2)  # turned a quarter clockwise in the crop
    assert roi.cx > wrist[0]


def test_a_new_region_over_a_tracked_one_is_not_another_hand():
    tracked = [Roi(100, 100, 50, 0)]
    new = [Roi(105, 102, 50, 0), Roi(300, 300, 50, 0), Roi(302, 300, 50, 0)]
    assert associate(new, tracked) == [1]


def test_a_graph_with_the_wrong_sha256_is_refused(tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    name = "hand_landmark_lite.tflite"
    (shipped / name).write_bytes(b"not the graph")
    monkeypatch.setattr(model_files, "shipped_dir", lambda: shipped)
    with pytest.raises(model_files.KeypointGraphCorrupt, match="fetch"):
        model_files.graph_path(name, cache_dir=tmp_path / "cache")
    with pytest.raises(model_files.KeypointGraphMissing, match="fetch --all"):
        model_files.graph_path("hand_landmark_full.tflite", cache_dir=tmp_path / "cache")


def test_fetch_reads_the_graphs_out_of_a_wheel_with_their_licence(tmp_path):
    wheel = tmp_path / "mediapipe-0.10.14-cp311-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:  # a wheel-shaped zip holding the shipped graphs
        for graph in model_files.GRAPHS.values():
            if graph.shipped:
                archive.write(model_files.shipped_dir() / graph.name, graph.member)
        archive.writestr(model_files.LICENSE_MEMBER, "Apache License\nVersion 2.0\n")
    manifest = model_files.fetch(wheel=wheel, out=tmp_path / "out")
    written = {entry["name"] for entry in manifest["files"]}
    assert written == {g.name for g in model_files.GRAPHS.values() if g.shipped}
    for name in written:
        assert model_files.sha256_of(tmp_path / "out" / name) == model_files.GRAPHS[name].sha256
    assert (tmp_path / "out" / "LICENSE").read_text().startswith("Apache License")
    assert (tmp_path / "out" / model_files.MANIFEST).is_file()


def test_the_shipped_graphs_carry_their_licence_and_provenance():
    folder = model_files.shipped_dir()
    assert "Apache License" in (folder / "LICENSE").read_text()
    assert "mediapipe" in (folder / "README.md").read_text()
    for graph in model_files.GRAPHS.values():
        if graph.shipped:
            assert model_files.graph_path(graph.name) == folder / graph.name
