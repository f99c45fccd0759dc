"""probe_cameras: which camera indices exist, found quickly and without OpenCV's console noise."""

from __future__ import annotations

import time

from dcrn.engine.sources.camera import MAX_INDEX, probe_cameras


def test_camera_probe_is_quick_and_quiet(capfd):
    started = time.monotonic()
    found = probe_cameras()
    assert time.monotonic() - started < 3.0
    assert all(0 <= index < MAX_INDEX for index in found)  # none on CI machines; whatever exists elsewhere
    out, err = capfd.readouterr()
    assert out == "" and err == ""
