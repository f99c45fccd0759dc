"""The Teach panel, driven like a user, offscreen, on the real pipeline, recorder and training code.

No camera exists on the machines these tests run on: where a test needs a source that is not the demo
stream, it writes a short video file and opens that, which the window treats as it treats a camera.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import cv2
import pytest

pytest.importorskip("PyQt6.QtWidgets")

from PyQt6.QtCore import Qt

from dcrn.app.gui.main import Gui
from dcrn.app.gui.settings import SettingsStore
from dcrn.engine.recorder import ClipRecorder
from dcrn.models import DCRN, DCRNConfig, save_checkpoint, shipped_models
from dcrn.models.synth import SyntheticActionStream
from dcrn.models.teach_data import BACKGROUND_LABEL, TeachDataset
from tests.fixtures.gui import teach_window
from tests.models.test_teach import camera_clip  # clips of a textured scene panning left, right or still

pytestmark = pytest.mark.gui

FIRST_PREDICTION_S = 15.0  # generous for a loaded 2-core machine
CLIP_S = 0.5  # recorded clip length: tiny clips keep training within seconds


@pytest.fixture
def gui(qtbot, tmp_path, monkeypatch):
    with teach_window(qtbot, tmp_path, monkeypatch, settle_s=5.0, poll_s=0.02) as window:
        yield window


def wait_for_predictions(qtbot, gui: Gui) -> None:
    qtbot.waitUntil(lambda: gui.controller.first_prediction_s is not None, timeout=int(FIRST_PREDICTION_S * 1000))
    qtbot.waitUntil(lambda: bool(gui.window.view.overlay.label), timeout=2000)


def add_label(qtbot, gui: Gui, name: str) -> None:
    panel = gui.window.teach
    panel.label_name.clear()
    qtbot.keyClicks(panel.label_name, name)
    qtbot.mouseClick(panel.add_label, Qt.MouseButton.LeftButton)


def teach_root(gui: Gui) -> Path:
    return gui.controller.teach.dataset.root


def counts(gui: Gui) -> dict[str, int]:
    return gui.controller.teach.dataset.counts()


def write_video(path: Path, seconds: float, fps: float = 30.0, seed: int = 1) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (160, 120))
    stream = SyntheticActionStream(seed=seed, size=(120, 160))
    for _ in range(round(seconds * fps)):
        writer.write(cv2.cvtColor(stream.read()[0], cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def record(qtbot, gui: Gui, label: str, clips: int, *, key: bool = False) -> None:
    """Record ``clips`` clips of ``label`` with the Record button (or the R key) and wait until saved."""
    panel = gui.window.teach
    panel.select_label(label)
    panel.seconds.setValue(CLIP_S)
    panel.countdown.setValue(0)
    panel.count.setValue(clips)
    before = counts(gui).get(label, 0)
    listed = len(panel.clip_paths())
    if key:
        gui.window.activateWindow()
        qtbot.waitUntil(lambda: gui.app.activeWindow() is gui.window, timeout=2000)
        qtbot.keyClick(gui.window.view, Qt.Key.Key_R)
    else:
        qtbot.mouseClick(panel.record, Qt.MouseButton.LeftButton)
    assert gui.controller.teach.recording
    qtbot.waitUntil(lambda: gui.window.view.recording is not None, timeout=2000)
    qtbot.waitUntil(lambda: counts(gui)[label] == before + clips, timeout=20_000)
    qtbot.waitUntil(lambda: len(panel.clip_paths()) == listed + clips, timeout=5000)
    qtbot.waitUntil(lambda: not gui.controller.teach.recording and gui.window.view.recording is None, timeout=5000)


def test_a_new_data_set_suggests_the_background_label_and_labels_can_be_added_renamed_deleted(qtbot, gui, tmp_path):
    gui.window.show_teach()
    panel = gui.window.teach
    assert panel.label_names() == [BACKGROUND_LABEL], "'nothing' is suggested from the start"
    add_label(qtbot, gui, "wave")
    add_label(qtbot, gui, "clap")
    assert panel.label_names() == [BACKGROUND_LABEL, "wave", "clap"]
    assert panel.current_label() == "clap", "a new label is selected, ready to record"
    panel.label_renamed.emit("clap", "thumbs up")  # what the Rename… dialog sends
    panel.label_deleted.emit("wave")  # what the Delete button sends once confirmed
    assert panel.label_names() == [BACKGROUND_LABEL, "thumbs up"]
    gui.window.activateWindow()
    add_label(qtbot, gui, "door opening")  # R, I and O are shortcuts, yet type into a text field
    assert panel.label_names()[-1] == "door opening" and not gui.controller.teach.recording
    panel.label_deleted.emit("door opening")
    stored = json.loads((tmp_path / "teach" / "my-actions" / "dataset.json").read_text())
    assert stored["labels"] == [BACKGROUND_LABEL, "thumbs up"]

    other = tmp_path / "elsewhere" / "gestures"
    panel.dataset_chosen.emit(str(other))  # what New… sends
    assert panel.dataset_path.text() == str(other) and teach_root(gui) == other
    assert SettingsStore(tmp_path / "settings.ini").load().teach_dataset == str(other), "remembered"


def test_an_empty_label_is_rejected_with_a_message(qtbot, gui):
    gui.window.show_teach()
    panel = gui.window.teach
    add_label(qtbot, gui, "   ")
    assert panel.label_names() == [BACKGROUND_LABEL]
    assert "empty" in panel.message.text()
    add_label(qtbot, gui, "train")
    assert "reserved" in panel.message.text()
    assert panel.label_names() == [BACKGROUND_LABEL]


def test_record_needs_a_running_stream_and_says_so(qtbot, gui):
    gui.window.show_teach()
    qtbot.mouseClick(gui.window.teach.record, Qt.MouseButton.LeftButton)
    assert not gui.controller.teach.recording
    assert "Start a stream" in gui.window.teach.message.text()


def test_record_two_clips_per_label_train_and_the_stream_switches_to_the_taught_model(qtbot, gui, model, tmp_path):
    pytest.importorskip("dcrn.models.teach")
    gui.controller.start(source="synthetic:", model=model)
    wait_for_predictions(qtbot, gui)
    worker = gui.controller.worker
    gui.window.show_teach()
    add_label(qtbot, gui, "wave")
    record(qtbot, gui, BACKGROUND_LABEL, 2)
    record(qtbot, gui, "wave", 2, key=True)
    dataset = TeachDataset.open(tmp_path / "teach" / "my-actions")
    assert dataset.counts() == {BACKGROUND_LABEL: 2, "wave": 2}
    assert all(abs(c.frames - CLIP_S * 30) <= 1 and c.source.startswith("synthetic:") for c in dataset.clips)
    assert len({c.session for c in dataset.clips}) == 1, "one sitting, one recording session"
    assert len(gui.window.teach.clip_paths()) == 4
    assert [r.event for r in gui.window.events.rows].count("clip_recorded") == 4

    started = time.monotonic()
    qtbot.mouseClick(gui.window.teach.train, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: gui.controller.teach.train_job is None, timeout=120_000)
    report = gui.controller.teach.last_report
    assert report is not None, gui.window.teach.message.text()
    assert time.monotonic() - started < 60
    out = tmp_path / "teach" / "my-actions.pt"
    assert report.out == out and out.is_file()
    assert "accuracy" in gui.window.teach.report.text()
    if report.above_chance is False:  # the demo stream's clips carry no label: 2 each may not beat chance
        assert gui.controller.settings.model == model, "not used without the user's yes"
        qtbot.mouseClick(gui.window.teach.use_anyway, Qt.MouseButton.LeftButton)

    qtbot.waitUntil(lambda: "model_changed" in [r.event for r in gui.window.events.rows], timeout=10_000)
    qtbot.waitUntil(lambda: gui.window.view.overlay.label in (BACKGROUND_LABEL, "wave"), timeout=10_000)
    assert {label for label, _ in gui.window.bars.rows} <= {BACKGROUND_LABEL, "wave"}
    assert gui.controller.worker is worker, "the stream went on: no restart"
    assert [r.event for r in gui.window.events.rows].count("session_started") == 1
    assert gui.window.panel.current_model() == str(out), "the taught model is chosen in the model list"
    assert gui.window.panel.models.findData(str(out)) >= 0
    assert "my-actions.pt" in gui.window.windowTitle()
    stored = SettingsStore(tmp_path / "settings.ini").load()
    assert stored.model == str(out) and str(out) in stored.recent_models


def test_the_demo_model_notice_shows_on_a_source_other_than_the_demo_stream(qtbot, gui, tmp_path):
    if "default" not in shipped_models():
        pytest.skip("the shipped default model is not installed")
    # No camera here: a video file stands in for one (the notice is about any source but the demo stream).
    video = write_video(tmp_path / "door.avi", 3.0)
    gui.controller.start(source=str(video), model="default")
    qtbot.waitUntil(gui.window.notice.isVisible, timeout=5000)
    assert "synthetic" in gui.window.notice.label.text()
    qtbot.mouseClick(gui.window.notice.teach, Qt.MouseButton.LeftButton)
    assert gui.window.tabs.currentWidget() is gui.window.teach_tab, "Teach… opens the Teach panel"
    gui.controller.start(source="synthetic:", model="default")
    wait_for_predictions(qtbot, gui)
    assert not gui.window.notice.isVisible(), "no notice on the demo stream the model was made for"


def test_a_labelled_clip_is_cut_from_a_file_between_in_and_out_marks(qtbot, gui, model, tmp_path):
    video = write_video(tmp_path / "footage.avi", 4.0)
    gui.controller.start(source=str(video), model=model)
    wait_for_predictions(qtbot, gui)
    gui.window.show_teach()
    panel = gui.window.teach
    assert not panel.cut_box.isHidden(), "the in / out marks show while a file plays"
    add_label(qtbot, gui, "wave")
    gui.window.activateWindow()
    qtbot.waitUntil(lambda: gui.app.activeWindow() is gui.window, timeout=2000)
    qtbot.waitUntil(lambda: (gui.controller.teach.last_pts or 0.0) > 0.3, timeout=5000)
    qtbot.keyClick(gui.window.view, Qt.Key.Key_I)
    mark_in = panel.marks()[0]
    qtbot.waitUntil(lambda: gui.controller.teach.last_pts > mark_in + 1.2, timeout=5000)
    qtbot.keyClick(gui.window.view, Qt.Key.Key_O)
    mark_in, mark_out = panel.marks()
    assert 0.3 <= mark_in < mark_out
    qtbot.mouseClick(panel.cut, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(panel.clip_paths()) == 1, timeout=10_000)
    clip = gui.controller.teach.dataset.clips_of("wave")[0]
    assert clip.cut == pytest.approx((mark_in, mark_out), abs=1e-3)
    assert abs(clip.frames - (mark_out - mark_in) * 30) <= 2

    panel.clips.setCurrentItem(panel.clips.topLevelItem(0))
    qtbot.mouseClick(panel.play_clip, Qt.MouseButton.LeftButton)
    assert gui.controller.worker.spec.source == str(teach_root(gui) / clip.path), "Play opens the clip as the source"
    wait_for_predictions(qtbot, gui)
    panel.clip_delete_requested.emit(panel.current_clip())  # what Delete sends once confirmed
    assert counts(gui)["wave"] == 0 and panel.clip_paths() == [], panel.message.text()
    assert not (gui.controller.teach.dataset.root / clip.path).exists()


def test_marks_need_a_file_source(qtbot, gui, model):
    gui.controller.start(source="synthetic:", model=model)
    wait_for_predictions(qtbot, gui)
    gui.window.show_teach()
    assert gui.window.teach.cut_box.isHidden()
    gui.window.actions["mark_in"].trigger()
    assert "video file" in gui.window.teach.message.text()


def write_dataset(root: Path, clips: dict[str, int]) -> TeachDataset:
    """A data set with ``clips[label]`` short clips of the demo stream per label, written straight to disk."""
    dataset = TeachDataset.open_or_create(root)
    stream = SyntheticActionStream(seed=2, size=(96, 128))
    for label, count in clips.items():
        if label not in dataset.labels:
            dataset.add_label(label)
        for _ in range(count):
            recorder = ClipRecorder(dataset, label, fps=30.0, source="synthetic:", session="test")
            for _ in range(15):
                recorder.write(stream.read()[0], wait=True)
            recorder.finish()
    return dataset


def test_training_refuses_a_label_with_one_clip_and_can_be_cancelled(qtbot, gui, model, tmp_path):
    pytest.importorskip("dcrn.models.teach")
    root = tmp_path / "teach" / "my-actions"
    write_dataset(root, {BACKGROUND_LABEL: 2, "wave": 1})
    gui.controller.start(source="synthetic:", model=model)
    wait_for_predictions(qtbot, gui)
    gui.window.show_teach()
    panel = gui.window.teach
    qtbot.mouseClick(panel.train, Qt.MouseButton.LeftButton)
    assert gui.controller.teach.train_job is None
    assert "at least 2 clips" in panel.message.text() and "wave" in panel.message.text()

    write_dataset(root, {"wave": 1})
    gui.controller.teach.open_dataset(str(root))  # the clips written meanwhile show up
    assert counts(gui) == {BACKGROUND_LABEL: 2, "wave": 2}
    qtbot.mouseClick(panel.train, Qt.MouseButton.LeftButton)
    assert panel.cancel.isVisible()
    qtbot.mouseClick(panel.cancel, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: gui.controller.teach.train_job is None, timeout=60_000)
    assert panel.message.text() == "Training cancelled"
    assert not (tmp_path / "teach" / "my-actions.pt").exists()
    assert gui.controller.settings.model == model, "the stream keeps its model"
    assert panel.train.isEnabled() and not panel.cancel.isVisible()


def test_a_file_that_ends_while_recording_keeps_the_clip_recorded_so_far(qtbot, gui, model, tmp_path):
    video = write_video(tmp_path / "short.avi", 3.0)
    gui.controller.start(source=str(video), model=model)
    wait_for_predictions(qtbot, gui)
    gui.window.show_teach()
    panel = gui.window.teach
    panel.seconds.setValue(10.0)  # longer than what is left of the file
    panel.countdown.setValue(0)
    qtbot.mouseClick(panel.record, Qt.MouseButton.LeftButton)
    assert gui.controller.teach.recording
    qtbot.waitUntil(lambda: gui.controller.status == "ended", timeout=10_000)
    qtbot.waitUntil(lambda: not gui.controller.teach.recording, timeout=2000)
    qtbot.waitUntil(lambda: len(panel.clip_paths()) == 1, timeout=5000)
    clip = gui.controller.teach.dataset.clips_of(BACKGROUND_LABEL)[0]
    assert 30 <= clip.frames < 90, "the second or more recorded before the end is kept"
    assert gui.window.view.recording is None
    assert not list(gui.controller.teach.dataset.root.rglob("*.partial.mp4"))


def test_a_model_handed_over_while_the_stream_starts_takes_over_once_it_runs(qtbot, gui, model, tmp_path):
    other = tmp_path / "other.pt"
    config = DCRNConfig(num_classes=2, labels=("knock", "door"), encoder_widths=(8,), hidden_size=8, input_size=32)
    save_checkpoint(other, DCRN(config))
    gui.controller.start(source="synthetic:", model=model)
    worker = gui.controller.worker
    gui.controller.use_model(str(other))  # what a finished training does; the engine may not run yet
    qtbot.waitUntil(lambda: "model_changed" in [r.event for r in gui.window.events.rows], timeout=20_000)
    qtbot.waitUntil(lambda: gui.window.view.overlay.label in ("knock", "door"), timeout=5000)
    assert gui.controller.worker is worker
    assert not gui.window.banner.isVisible()


def write_motion_dataset(root: Path, motions: dict[str, tuple[int, int]], clips: int, *, same: bool = False) -> None:
    """``clips`` clips of a textured scene per label, panning as ``motions`` says, written straight to disk.

    ``same``: every label gets the very same clips (the first label's motion), so nothing tells them apart.
    """
    dataset = TeachDataset.open_or_create(root)
    for n, (label, motion) in enumerate(motions.items()):
        if label not in dataset.labels:
            dataset.add_label(label)
        for k in range(clips):
            seed = 10 * k + (0 if same else n)
            recorder = ClipRecorder(dataset, label, fps=30.0, source="synthetic:", session="test")
            for frame in camera_clip(seed, next(iter(motions.values())) if same else motion, frames=20):
                recorder.write(frame, wait=True)
            recorder.finish()


def train_in_window(qtbot, gui: Gui, model: str):
    gui.controller.start(source="synthetic:", model=model)
    wait_for_predictions(qtbot, gui)
    gui.window.show_teach()
    qtbot.mouseClick(gui.window.teach.train, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: gui.controller.teach.train_job is None, timeout=120_000)
    report = gui.controller.teach.last_report
    assert report is not None, gui.window.teach.message.text()
    return report


def events(gui: Gui) -> list[str]:
    return [r.event for r in gui.window.events.rows]


def test_a_model_no_better_than_chance_is_not_used_until_the_user_says_so(qtbot, gui, model, tmp_path):
    pytest.importorskip("dcrn.models.teach")
    write_motion_dataset(tmp_path / "teach" / "my-actions", {BACKGROUND_LABEL: (3, 0), "wave": (3, 0)}, 3, same=True)
    report = train_in_window(qtbot, gui, model)
    panel = gui.window.teach
    assert report.above_chance is False and report.cv_accuracy <= 0.5
    assert "not clearly better than chance" in panel.report.text() and "more clips" in panel.report.text()
    assert "not used" in panel.message.text()
    assert not panel.use_anyway.isHidden(), "the user is asked, without a modal dialog"
    assert "model_not_used" in events(gui)
    qtbot.wait(500)
    assert "model_changed" not in events(gui) and gui.controller.settings.model == model, "the stream keeps its model"

    qtbot.mouseClick(panel.use_anyway, Qt.MouseButton.LeftButton)  # the user's yes
    qtbot.waitUntil(lambda: "model_changed" in events(gui), timeout=10_000)
    assert gui.controller.settings.model == str(report.out)
    assert panel.use_anyway.isHidden() and gui.controller.teach.pending_model is None


def test_a_model_clearly_above_chance_is_used_at_once(qtbot, gui, model, tmp_path):
    pytest.importorskip("dcrn.models.teach")
    write_motion_dataset(tmp_path / "teach" / "my-actions", {BACKGROUND_LABEL: (0, 0), "pan": (3, 0)}, 4)
    report = train_in_window(qtbot, gui, model)
    assert report.above_chance is True, report.summary()
    assert gui.window.teach.use_anyway.isHidden() and "not clearly" not in gui.window.teach.report.text()
    qtbot.waitUntil(lambda: "model_changed" in events(gui), timeout=10_000)
    assert gui.controller.settings.model == str(report.out) and "model_not_used" not in events(gui)
