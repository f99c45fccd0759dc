"""``dcrn gui`` as a process: Ctrl+C (SIGINT) and SIGTERM close the window cleanly with exit code 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

pytest.importorskip("PyQt6.QtWidgets")


pytestmark = [pytest.mark.gui, pytest.mark.slow]

SECRET = "s3cretPW"


def launch(tmp_path, model: str, source: str = "synthetic:") -> tuple[subprocess.Popen, object]:
    log = (tmp_path / "gui.log").open("w+")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "DCRN_GUI_SETTINGS": str(tmp_path / "unused.ini")}
    command = [sys.executable, "-m", "dcrn.app", "--log-level", "INFO", "gui", "--source", source, "--model", model]
    command += ["--settings", str(tmp_path / "settings.ini")]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    return process, log


def wait_for_log(process: subprocess.Popen, log, text: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log.seek(0)
        content = log.read()
        if text in content:
            return content
        if process.poll() is not None:
            pytest.fail(f"dcrn gui exited early with {process.returncode}:\n{content}")
        time.sleep(0.1)
    process.kill()
    log.seek(0)
    pytest.fail(f"no {text!r} in the log within {timeout} s:\n{log.read()}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_closes_the_window_cleanly_with_exit_code_0(tmp_path, model, signum):
    process, log = launch(tmp_path, model)
    try:
        wait_for_log(process, log, "first prediction after")
        sent = time.monotonic()
        process.send_signal(signum)
        code = process.wait(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    log.seek(0)
    content = log.read()
    assert code == 0, content
    assert "closing the window" in content and "engine stopped" in content
    assert elapsed < 5.0, f"took {elapsed:.1f} s to exit"
    assert (tmp_path / "settings.ini").exists(), "settings are saved on the way out"


def test_the_log_of_a_session_on_an_rtsp_url_never_holds_its_credentials(tmp_path, model):
    process, log = launch(tmp_path, model, source=f"rtsp://admin:{SECRET}@127.0.0.1:9/cam")
    try:
        wait_for_log(process, log, "engine error on")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
    log.seek(0)
    content = log.read()
    assert "127.0.0.1:9/cam" in content
    assert SECRET not in content and "admin" not in content
