"""Evidence in the window: `dcrn gui --evidence DIR` lists each action's clip and plays it in a small player."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from dcrn.app.gui.clip_player import ClipPlayer
from dcrn.app.gui.event_list import CLIP_TEXT, EventRow
from dcrn.app.gui.main import build
from dcrn.app.gui.settings import SettingsStore

pytestmark = pytest.mark.gui

CLIP_WAIT_S = 60.0  # the demo stream's first action, on a loaded 2-core machine


@pytest.fixture
def gui(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("DCRN_GUI_SETTINGS", str(tmp_path / "never-used.ini"))
    threads_before = set(threading.enumerate())
    gui = build(tmp_path / "settings.ini", evidence=str(tmp_path / "evidence"))
    qtbot.addWidget(gui.window)
    gui.window.show()
    yield gui
    gui.window.close()
    deadline = time.monotonic() + 3.0
    while [t for t in threading.enumerate() if t not in threads_before and t.name.startswith("dcrn-")]:
        assert time.monotonic() < deadline, "a window thread outlived the window"
        time.sleep(0.02)


def test_the_event_list_shows_the_clips_of_a_run_and_plays_them(qtbot, gui, model, tmp_path):
    evidence = tmp_path / "evidence"
    assert gui.controller.settings.evidence_dir == str(evidence.resolve())
    gui.controller.start(source="synthetic:?seed=2&fps=30", model=model)
    assert gui.controller.worker.spec.evidence_dir == str(evidence.resolve())
    events = gui.window.events
    qtbot.waitUntil(
        lambda: any(r.event == "action_started" and r.clip for r in events.rows), timeout=int(CLIP_WAIT_S * 1000)
    )
    gui.controller.stop()  # the recorder closes: every open clip ends complete under its final name
    assert gui.controller.worker is None
    qtbot.waitUntil(lambda: not gui.controller.stopping, timeout=10_000)
    row_index, row = next((i, r) for i, r in enumerate(events.rows) if r.event == "action_started" and r.clip)
    assert Path(row.clip).is_file() and Path(row.clip).is_relative_to(evidence.resolve())
    assert row.clip.endswith(".mp4") and row.snapshot.endswith(".jpg")
    assert events.topLevelItem(row_index).text(3) == CLIP_TEXT
    assert CLIP_TEXT in events.texts() and events.clip_rows()
    assert SettingsStore(tmp_path / "settings.ini").load().evidence_dir == str(evidence.resolve())

    events.open_clip(row_index)  # what a double click on the row does
    player = gui.window.player
    assert isinstance(player, ClipPlayer) and player.isVisible()
    qtbot.waitUntil(lambda: player.frames_shown > 5, timeout=10_000)
    assert player.view.image is not None and player.error == ""
    assert player.grab().save(str(tmp_path / "player.png"))
    assert gui.window.grab().save(str(tmp_path / "window.png"))
    player.close()
    assert player.decoder is None


def test_the_player_decodes_a_clip_to_its_end_and_replays(qtbot, tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 60.0, (160, 120))
    for i in range(30):
        writer.write(np.full((120, 160, 3), i * 8, np.uint8))
    writer.release()
    player = ClipPlayer(str(path))
    qtbot.addWidget(player)
    player.show()
    qtbot.waitUntil(lambda: not player.timer.isActive(), timeout=10_000)
    assert player.frames_shown == 30 and player.view.overlay.status == "ended"
    player.replay.click()
    qtbot.waitUntil(lambda: player.frames_shown > 30, timeout=5_000)
    player.close()


def test_a_clip_still_being_written_is_not_played_and_a_bad_file_says_why(qtbot, gui, tmp_path):
    gui.window.add_event(EventRow(time.time(), "action_started", "wave 90%", clip=str(tmp_path / "missing.mp4")))
    gui.window.events.open_clip(gui.window.events.topLevelItemCount() - 1)
    assert gui.window.player is None and "not complete" in gui.window.statusBar().currentMessage()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    player = gui.window.play_clip(str(bad))
    qtbot.waitUntil(lambda: bool(player.error), timeout=5_000)
    assert player.frames_shown == 0 and player.view.overlay.status == "error"
