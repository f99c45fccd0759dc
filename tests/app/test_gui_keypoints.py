"""A model taught on bodies, in the window: the skeleton drawn over real footage, the parts that drive the
decision named under the label, and the Teach tab's warning on a clip with nobody in it.

Footage: the first 40 frames (1.4 s, 1280x720) of GMDCSA24 ``Subject 1/ADL/10.mp4`` from ``../shared/data``,
a man in a room in view from the first frame; the keypoint graphs read it scaled to 640 px wide, so the
window's points are scaled back by 2. The clip with nobody in it is the synthetic stream's moving shapes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest
import torch

pytest.importorskip("PyQt6.QtWidgets")
pytest.importorskip("openvino")

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QColor, QImage

from dcrn.app.gui import teach_jobs
from dcrn.app.gui.keypoint_overlay import (
    AGAINST_COLOR,
    BODY_JOINT,
    FOR_COLOR,
    HAND_JOINT,
    MIN_VISIBILITY,
    TAG_TEXT,
    Keypoints,
)
from dcrn.app.gui.main import Gui
from dcrn.app.gui.video_view import Overlay, VideoView
from dcrn.models.checkpoint import save_checkpoint
from dcrn.models.dcrn import DCRN
from dcrn.models.frame_vector import feature_names
from dcrn.models.synth import SyntheticActionStream
from dcrn.models.teach import features_config
from dcrn.models.video_io import read_video, write_video
from tests.fixtures.gui import teach_window

pytestmark = pytest.mark.gui

PERSON = "gmdcsa24/Subject 1/ADL/10.mp4"
CORRIDOR = "fight-cctv/noFight/nofi075.mp4"  # two people walk down a corridor side by side
FRAMES = 40
FIRST_FRAME_S = 30.0  # the keypoint graphs compile before the first frame; generous for a loaded 2-core machine
CHECK_S = 40.0  # a clip's hands and bodies found off the GUI thread (the graphs compile first)


@pytest.fixture(scope="module")
def person_clip(shared_dir, tmp_path_factory) -> Path:
    frames, fps = read_video(shared_dir / "data" / PERSON, None, max_frames=FRAMES)
    assert frames.shape == (FRAMES, 720, 1280, 3)
    return write_video(tmp_path_factory.mktemp("person") / "adl10.mp4", frames, fps)


@pytest.fixture(scope="module")
def empty_clip(tmp_path_factory) -> Path:
    stream = SyntheticActionStream(seed=3, size=(240, 320))
    frames = [stream.read()[0] for _ in range(30)]
    return write_video(tmp_path_factory.mktemp("empty") / "shapes.mp4", frames, 30.0)


@pytest.fixture(scope="module")
def body_model(tmp_path_factory) -> Path:
    """A model taught on bodies, with a fixed random head (drawing needs no trained weights)."""
    model = DCRN(features_config(("daily", "fall"), ("body",))).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.head[-1].weight.copy_(torch.randn(model.head[-1].weight.shape, generator=generator) * 0.01)
        model.head[-1].bias.zero_()
    return save_checkpoint(tmp_path_factory.mktemp("model") / "body.pt", model, meta={})


@pytest.fixture
def gui(qtbot, tmp_path, monkeypatch):
    with teach_window(qtbot, tmp_path, monkeypatch, settle_s=20.0, poll_s=0.05) as window:
        yield window


def cut_clip(qtbot, gui: Gui, clip: Path, model: str, seconds: float) -> str:
    """Play ``clip`` and cut its first ``seconds`` into a clip of the selected label; its path in the data set."""
    gui.controller.start(source=str(clip), model=model)
    qtbot.waitUntil(lambda: gui.controller.first_prediction_s is not None, timeout=int(FIRST_FRAME_S * 1000))
    gui.window.show_teach()
    panel = gui.window.teach
    assert panel.current_label() is not None
    panel.set_marks(0.0, seconds)
    qtbot.mouseClick(panel.cut, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(panel.clip_paths()) == 1, timeout=20_000)
    return panel.clip_paths()[0]


def test_a_body_model_draws_the_skeleton_over_the_person_and_names_the_parts_that_decide(
    qtbot, gui, person_clip, body_model, tmp_path
):
    gui.window.resize(1200, 760)
    gui.controller.start(source=str(person_clip), model=str(body_model))
    view = gui.window.view

    def found() -> bool:
        return view.overlay.keypoints is not None and bool(view.overlay.keypoints.people)

    qtbot.waitUntil(found, timeout=int(FIRST_FRAME_S * 1000))
    keypoints = view.overlay.keypoints
    person = keypoints.people[0]
    assert person.shape == (33, 3)
    visible = person[person[:, 2] >= MIN_VISIBILITY]
    assert len(visible) >= 20, "a man standing in a room: most of his joints are in view"
    x, y = visible[:, 0], visible[:, 1]
    assert x.min() >= 0 and x.max() < 1280 and y.min() >= 0 and y.max() < 720, "points in the displayed frame"
    assert y.max() - y.min() > 300, "scaled back to the 720-px frame: head to feet spans most of its height"
    assert len(keypoints.regions) >= 1 and keypoints.regions[0].shape == (4, 2)

    why = view.explanation
    label, _, named = why.partition(": ")
    assert label in ("daily", "fall") and "%" in named, why
    parts = [part.rsplit(" ", 1)[0] for part in named.split(", ")]
    assert 1 <= len(parts) <= 4 and set(parts) <= set(feature_names(("body",))), why

    picture = view.snapshot()  # the frame at its own size with the skeleton and overlay drawn on it
    assert picture.save(str(tmp_path / "keypoints.png"))
    drawn = {c.rgb() for c in (BODY_JOINT, FOR_COLOR, AGAINST_COLOR)}
    on_joints = [picture.pixelColor(int(px), int(py)).rgb() in drawn for px, py, _ in visible]
    assert np.mean(on_joints) > 0.8, "a dot is drawn on every visible joint"
    assert view.grab().save(str(tmp_path / "window.png"))


def test_with_several_people_each_one_s_own_decision_is_drawn_above_them(qtbot, gui, shared_dir, body_model, tmp_path):
    frames, fps = read_video(shared_dir / "data" / CORRIDOR, None, max_frames=60)
    clip = write_video(tmp_path / "corridor.mp4", frames, fps or 25.0)
    gui.controller.people = 2  # as `dcrn gui --people 2`
    gui.controller.start(source=str(clip), model=str(body_model))
    view = gui.window.view

    def both_tagged() -> bool:
        keypoints = view.overlay.keypoints
        return keypoints is not None and len(keypoints.people) == 2 and all(keypoints.tags)

    qtbot.waitUntil(both_tagged, timeout=int(FIRST_FRAME_S * 1000))
    keypoints, picture = view.overlay.keypoints, view.snapshot()  # the same frame: no event ran in between
    ids = []
    for tag in keypoints.tags:  # "#3 daily 51%"
        person, label, score = tag.split(" ")
        ids.append(int(person.removeprefix("#")))
        assert label in ("daily", "fall") and score.endswith("%"), tag
    assert len(set(ids)) == 2, "two people, two ids"
    assert any(share != 0 for _, share in keypoints.parts), "explained from the first person's own memory"
    assert picture.save(str(tmp_path / "people.png"))
    white = TAG_TEXT.rgb()
    for person in keypoints.people:
        visible = person[person[:, 2] >= MIN_VISIBILITY]
        x, top = int(np.median(visible[:, 0])), int(visible[:, 1].min())
        above = [
            picture.pixelColor(px, py).rgb() == white
            for px in range(max(0, x - 50), min(picture.width(), x + 50))
            for py in range(max(0, top - 40), max(0, top - 4))
        ]
        assert sum(above) >= 10, "the person's decision is written just above their head"


def test_a_clip_with_nobody_in_view_gets_a_warning_in_the_teach_tab(qtbot, gui, empty_clip, model):
    path = cut_clip(qtbot, gui, empty_clip, model, 0.8)
    assert gui.window.view.overlay.keypoints is None, "no landmarks for a model not taught on keypoints"
    checks = gui.controller.teach.checks
    qtbot.waitUntil(lambda: path in checks.results, timeout=int(CHECK_S * 1000))
    panel = gui.window.teach
    warning = panel.clip_warning(path)
    assert warning.startswith("no hand or body found in most frames of this clip (hand ")
    assert "keep hands and body in view" in warning and checks.results[path] == warning
    item = panel.clips.topLevelItem(0)
    assert item.text(0).startswith("⚠") and warning in item.toolTip(0)
    assert warning in panel.message.text()
    cached = list((gui.controller.teach.dataset.root / ".cache" / "features" / "keypoints").glob("*.npz"))
    assert len(cached) == 1, "the keypoints read are kept for the next training"


def test_a_clip_with_a_person_in_view_gets_no_warning(qtbot, gui, person_clip, model):
    path = cut_clip(qtbot, gui, person_clip, model, 1.0)
    checks = gui.controller.teach.checks
    qtbot.waitUntil(lambda: path in checks.results, timeout=int(CHECK_S * 1000))
    assert checks.results[path] == "" and gui.window.teach.clip_warning(path) == ""
    assert not gui.window.teach.clips.topLevelItem(0).text(0).startswith("⚠")


def test_without_the_keypoint_graphs_clips_are_not_checked_and_a_log_line_says_so(
    qtbot, gui, empty_clip, model, monkeypatch, caplog
):
    monkeypatch.setattr(teach_jobs, "keypoint_reader", lambda: None)  # what it returns where OpenVINO is missing
    caplog.set_level(logging.INFO, logger=teach_jobs.__name__)
    path = cut_clip(qtbot, gui, empty_clip, model, 0.5)
    qtbot.waitUntil(lambda: "hands and bodies not looked for" in caplog.text, timeout=10_000)
    assert gui.window.teach.clip_warning(path) == "" and path not in gui.controller.teach.checks.results
    assert not gui.window.teach.clips.topLevelItem(0).text(0).startswith("⚠")


def test_a_hand_is_drawn_with_its_finger_lines_and_the_deciding_finger_highlighted(qtbot):
    view = VideoView()
    qtbot.addWidget(view)
    frame = QImage(320, 240, QImage.Format.Format_RGB888)
    frame.fill(QColor(40, 40, 40))
    fingers = [(0.0, 0.0)] + [(dx, -15.0 * k) for dx in (-30, -15, 0, 15, 30) for k in (1, 2, 3, 4)]
    hand = np.float32(fingers) + np.float32([160, 200])  # (21, 2): wrist at the bottom, five fingers up
    keypoints = Keypoints(hands=(hand,), label="wave", parts=(("hand 1: index finger", -0.5), ("head", 0.3)))
    view.show_frame(frame, Overlay(label="wave", score=0.9, status="live", keypoints=keypoints))
    assert view.explanation == "wave: hand 1: index finger -50%, head +30%"
    picture = view.snapshot()
    index_tip, thumb_tip = hand[8], hand[4]
    assert picture.pixelColor(int(index_tip[0]), int(index_tip[1])) == AGAINST_COLOR, "it speaks against 'wave'"
    assert picture.pixelColor(int(thumb_tip[0]), int(thumb_tip[1])) == HAND_JOINT
    between = (hand[5] + hand[6]) / 2  # halfway along the index finger's first bone
    assert picture.pixelColor(int(between[0]), int(between[1])).red() > 120, "finger lines join the joints"
    assert picture.pixelColor(int(between[0]) + 7, int(between[1])).red() == 40, "and nothing between the fingers"
