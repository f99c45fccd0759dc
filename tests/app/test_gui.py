"""The desktop window, driven like a user, offscreen, on the real streaming pipeline and the demo stream."""

from __future__ import annotations

import csv
import logging
import os
import socket
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import cv2
import pytest

pytest.importorskip("PyQt6.QtWidgets")

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QImage

from dcrn.app.gui.controller import describe_source
from dcrn.app.gui.main import SHORTCUTS, Gui, build
from dcrn.app.gui.settings import SettingsStore
from dcrn.app.gui.worker import MAX_IN_FLIGHT
from dcrn.models.synth import CLASSES, SyntheticActionStream

pytestmark = pytest.mark.gui

FIRST_PREDICTION_S = 15.0  # generous for a loaded 2-core CI machine; typically well under a second
SECRET = "s3cretPW"


@pytest.fixture
def gui(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("DCRN_GUI_SETTINGS", str(tmp_path / "never-used.ini"))  # a stray default stays in tmp
    threads_before = set(threading.enumerate())
    gui = build(tmp_path / "settings.ini")
    gui.controller.settings.snapshot_dir = str(tmp_path / "snapshots")
    qtbot.addWidget(gui.window)
    gui.window.show()
    yield gui
    gui.window.close()
    _wait_for_threads(threads_before, 3.0)


def _wait_for_threads(before: set[threading.Thread], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        extra = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.02)


def wait_for_predictions(qtbot, gui: Gui, timeout_s: float = FIRST_PREDICTION_S) -> None:
    qtbot.waitUntil(lambda: gui.controller.first_prediction_s is not None, timeout=int(timeout_s * 1000))
    qtbot.waitUntil(lambda: bool(gui.window.view.overlay.label) and bool(gui.window.bars.rows), timeout=2000)


def grab(gui: Gui, path: Path) -> None:
    assert gui.window.grab().save(str(path), "PNG")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_window_shows_predictions_on_the_demo_stream_within_seconds(qtbot, gui, model, tmp_path):
    started = time.monotonic()
    gui.controller.start(source="synthetic:", model=model)
    wait_for_predictions(qtbot, gui)
    logging.getLogger(__name__).info("first prediction after %.2f s", time.monotonic() - started)
    window = gui.window
    assert window.view.overlay.label in CLASSES or "default" in model
    assert 0.0 < window.view.overlay.score <= 1.0
    assert len(window.bars.rows) == 5
    assert window.status_label.text() == "live"
    assert "Demo stream" in window.windowTitle()
    qtbot.waitUntil(lambda: window.fps_label.text() != "– fps", timeout=3000)
    assert window.start_stop.text() == "Stop"
    grab(gui, tmp_path / "demo.png")


def test_switching_source_from_the_url_field_restarts_on_the_new_source(qtbot, gui, model):
    gui.controller.start(source="synthetic:", model=model)
    wait_for_predictions(qtbot, gui)
    first = gui.controller.worker
    qtbot.keyClicks(gui.window.panel.url, "synthetic:?seed=3&fps=30")
    qtbot.keyClick(gui.window.panel.url, Qt.Key.Key_Return)
    wait_for_predictions(qtbot, gui)
    assert gui.controller.worker is not first
    assert gui.controller.worker.spec.source == "synthetic:?seed=3&fps=30"
    assert first.join(2.0), "the previous engine thread did not stop"
    assert "seed=3" in gui.window.panel.sources.currentText()
    assert gui.window.panel.url.text() == ""


def test_choosing_the_demo_stream_in_the_source_list_switches_to_it(qtbot, gui, model):
    gui.controller.start(source="synthetic:?seed=5", model=model)
    wait_for_predictions(qtbot, gui)
    sources = gui.window.panel.sources
    index = sources.findData("synthetic:")
    sources.setCurrentIndex(index)
    sources.activated.emit(index)  # what a click on the entry sends
    wait_for_predictions(qtbot, gui)
    assert gui.controller.worker.spec.source == "synthetic:"


def test_a_video_file_plays_to_its_end_and_the_window_says_ended(qtbot, gui, model, tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
    stream = SyntheticActionStream(seed=1, size=(120, 160))
    for _ in range(45):  # 1.5 s
        writer.write(cv2.cvtColor(stream.read()[0], cv2.COLOR_RGB2BGR))
    writer.release()
    gui.window.model_chosen.emit(model)  # what the model list sends
    gui.window.source_chosen.emit(str(path))  # what the File… dialog sends
    wait_for_predictions(qtbot, gui)
    assert "clip.avi" in gui.window.windowTitle()
    qtbot.waitUntil(lambda: gui.controller.status == "ended" and gui.controller.worker is None, timeout=15_000)
    assert gui.window.start_stop.text() == "Start"
    assert "stream_ended" in [row.event for row in gui.window.events.rows]
    assert gui.window.view.image is not None, "the last frame stays on screen"
    assert gui.window.panel.current_source() == str(path), "files join the recent sources"


def test_a_bad_url_shows_an_error_and_the_window_still_works(qtbot, gui, model, tmp_path):
    gui.controller.start(source="synthetic:", model=model)
    wait_for_predictions(qtbot, gui)
    qtbot.keyClicks(gui.window.panel.url, "nosuchscheme://camera/1")
    qtbot.keyClick(gui.window.panel.url, Qt.Key.Key_Return)
    qtbot.waitUntil(gui.window.banner.isVisible, timeout=10_000)
    assert "nosuchscheme" in gui.window.banner.label.text()
    assert gui.window.status_label.text() == "error"
    assert gui.window.start_stop.text() == "Start"
    grab(gui, tmp_path / "error.png")
    gui.window.actions["demo"].trigger()
    wait_for_predictions(qtbot, gui)
    assert not gui.window.banner.isVisible()
    assert gui.window.status_label.text() == "live"


def test_a_missing_file_and_an_unreadable_model_show_errors(qtbot, gui, model, tmp_path):
    gui.controller.start(source=str(tmp_path / "missing.mp4"), model=model)
    qtbot.waitUntil(gui.window.banner.isVisible, timeout=10_000)
    assert "missing.mp4" in gui.window.banner.label.text()
    gui.window.clear_error()
    gui.controller.start(source="7", model=model)  # no such camera here (nor on most machines)
    qtbot.waitUntil(gui.window.banner.isVisible, timeout=10_000)
    assert "7" in gui.window.banner.label.text()
    assert "Camera 7" in gui.window.windowTitle()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    gui.controller.start(source="synthetic:", model=str(broken))
    qtbot.waitUntil(lambda: "broken.pt" in gui.window.banner.label.text(), timeout=10_000)
    assert gui.window.banner.isVisible()
    gui.window.model_chosen.emit(model)  # the user picks a good model again and starts
    qtbot.mouseClick(gui.window.start_stop, Qt.MouseButton.LeftButton)
    wait_for_predictions(qtbot, gui)
    assert not gui.window.banner.isVisible()


def test_credentials_in_an_rtsp_url_never_show_in_title_events_list_or_logs(qtbot, gui, model, caplog):
    caplog.set_level(logging.DEBUG)
    url = f"rtsp://admin:{SECRET}@127.0.0.1:{closed_port()}/cam"
    gui.controller.start(source="synthetic:", model=model)
    wait_for_predictions(qtbot, gui)
    qtbot.keyClicks(gui.window.panel.url, url)
    qtbot.keyClick(gui.window.panel.url, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: gui.controller.worker is None or gui.controller.status == "error", timeout=30_000)
    window = gui.window
    sources = window.panel.sources
    shown = [
        window.windowTitle(),
        window.banner.label.text(),
        window.panel.url.text(),
        *window.events.texts(),
        *[sources.itemText(i) for i in range(sources.count())],
        *[str(sources.itemData(i, Qt.ItemDataRole.ToolTipRole)) for i in range(sources.count())],
        caplog.text,
    ]
    assert "127.0.0.1" in window.windowTitle()
    for text in shown:
        assert SECRET not in text and "admin" not in text, text
    assert sources.findData(url) >= 0, "the recent list keeps the full URL to reconnect with"


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (f"rtsp://admin:{SECRET}@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
        (f"rtsps://{SECRET}@cam.example/live", "rtsps://***@cam.example/live"),
        (f"https://cam.example/live.m3u8?token={SECRET}&q=hd", "https://cam.example/live.m3u8?token=***&q=hd"),
        ("0", "Camera 0"),
        ("synthetic:", "Demo stream"),
    ],
)
def test_sources_are_described_without_credentials(uri, shown):
    assert describe_source(uri) == shown


def test_snapshot_button_writes_a_png_of_the_frame_with_its_overlay(qtbot, gui, model, tmp_path):
    gui.controller.start(source="synthetic:", model=model)
    wait_for_predictions(qtbot, gui)
    qtbot.mouseClick(gui.window.snapshot_button, Qt.MouseButton.LeftButton)
    files = list((tmp_path / "snapshots").glob("*.png"))
    assert len(files) == 1
    image = QImage(str(files[0]))
    assert not image.isNull()
    assert image.size() == gui.window.view.image.size()


def test_events_list_can_be_saved_as_csv(qtbot, gui, model, tmp_path):
    gui.controller.start(source="synthetic:", model=model)
    wait_for_predictions(qtbot, gui)
    gui.window.actions["start_stop"].trigger()
    gui.window.save_events_requested.emit(str(tmp_path / "events.csv"))
    with (tmp_path / "events.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["event"] == "session_started"
    assert rows[-1]["event"] == "session_stopped"
    assert all(r["time"] for r in rows)


def test_closing_the_window_stops_every_thread_within_2_seconds(qtbot, tmp_path, model):
    before = set(threading.enumerate())
    gui = build(tmp_path / "settings.ini")
    gui.window.show()
    gui.controller.start(source="synthetic:", model=model)
    wait_for_predictions(qtbot, gui)
    assert [t for t in threading.enumerate() if t not in before], "the engine should run in its own threads"
    started = time.monotonic()
    gui.window.close()
    left = _wait_for_threads(before, 2.0)
    elapsed = time.monotonic() - started
    logging.getLogger(__name__).info("closed, every thread ended, in %.3f s", elapsed)
    assert left == [], f"threads still alive 2 s after close: {left}"
    assert elapsed < 2.0


def test_frames_are_dropped_not_queued_while_the_window_is_busy(qtbot, gui, model):
    gui.controller.start(source="synthetic:", model=model)
    wait_for_predictions(qtbot, gui)
    worker = gui.controller.worker
    time.sleep(1.5)  # the GUI thread paints nothing meanwhile; the engine keeps going
    assert worker.in_flight <= MAX_IN_FLIGHT
    assert worker.display_dropped > 0
    painted = gui.window.view.frames_painted
    qtbot.waitUntil(lambda: gui.window.view.frames_painted > painted + 3, timeout=5000)  # live again at once
    qtbot.waitUntil(lambda: int(gui.window.dropped_label.text().split()[-1]) >= worker.display_dropped, timeout=2000)


def test_keyboard_shortcuts_switch_to_the_demo_stream_and_stop(qtbot, gui, model):
    gui.controller.start(source="synthetic:?seed=4", model=model)
    wait_for_predictions(qtbot, gui)
    gui.window.activateWindow()
    qtbot.waitUntil(lambda: gui.app.activeWindow() is gui.window, timeout=2000)
    qtbot.keyClick(gui.window.view, Qt.Key.Key_D, Qt.KeyboardModifier.ControlModifier)
    assert gui.controller.worker.spec.source == "synthetic:"
    wait_for_predictions(qtbot, gui)
    qtbot.keyClick(gui.window.view, Qt.Key.Key_Space)
    assert gui.controller.worker is None
    assert gui.window.status_label.text() == "stopped"
    qtbot.keyClick(gui.window.view, Qt.Key.Key_F5)
    wait_for_predictions(qtbot, gui)


def test_every_shortcut_is_wired_to_its_action(gui):
    keys = [key for names in SHORTCUTS.values() for key in names]
    assert len(keys) == len(set(keys)), "a key is bound twice"
    for name, names in SHORTCUTS.items():
        action = gui.window.actions[name]
        assert [s.toString() for s in action.shortcuts()] == list(names)
        assert action in gui.window.actions.values()


def test_settings_remember_source_model_and_recent_urls_between_launches(qtbot, tmp_path, model):
    path = tmp_path / "settings.ini"
    port = closed_port()
    url = f"rtsp://admin:{SECRET}@127.0.0.1:{port}/cam"
    first = build(path)
    first.controller.settings.remember_source(url)
    first.controller.start(source="synthetic:?seed=2", model=model)
    first.window.close()
    assert path.stat().st_mode & 0o077 == 0, "the settings file names cameras: owner-only"
    assert SECRET not in path.read_text(), "a password never reaches the settings file"
    stored = SettingsStore(path).load()
    assert stored.source == "synthetic:?seed=2" and stored.model == model
    stored_url = f"rtsp://admin@127.0.0.1:{port}/cam"  # the password comes from $DCRN_CREDENTIALS
    assert stored.recent_sources == [stored_url]
    second = build(path)
    qtbot.addWidget(second.window)
    panel = second.window.panel
    assert panel.current_source() == "synthetic:?seed=2"
    assert panel.current_model() == model
    index = panel.sources.findData(stored_url)
    assert index >= 0 and "admin" not in panel.sources.itemText(index)
    second.window.close()
