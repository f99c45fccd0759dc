"""``dcrn demo``: the synthetic stream with live, readable predictions on stdout; ``--gui`` opens the window."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dcrn.app.cli import main
from dcrn.models import DCRN, DCRNConfig, save_checkpoint, shipped_models

REPO = Path(__file__).resolve().parents[2]
LABELS = ("still", "move_left", "move_right", "grow")


@pytest.fixture
def model_path(tmp_path) -> Path:
    config = DCRNConfig(num_classes=4, labels=LABELS, encoder_widths=(8, 16), hidden_size=16, input_size=32)
    return save_checkpoint(tmp_path / "m.pt", DCRN(config))


def test_demo_prints_readable_live_predictions(model_path, capsys):
    code = main(["demo", "--model", str(model_path), "--max-frames", "25", "--fps", "60", "--threads", "1"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    predictions = [line for line in lines if re.match(r"synthetic\s+\d+\s+[\d.]+s\s+\w+\s+[\d.]+", line)]
    assert len(predictions) == 3  # frames 0, 10 and 20: one line every 10 frames
    assert all(line.split()[3] in LABELS for line in predictions)


def test_demo_sinks_can_be_chosen(model_path, tmp_path):
    code = main(["demo", "--model", str(model_path), "--max-frames", "5", "--sink", f"jsonl:{tmp_path / 'o.jsonl'}"])
    assert code == 0
    assert (tmp_path / "o.jsonl").read_text().count('"type": "prediction"') == 5


@pytest.mark.skipif("default" not in shipped_models(), reason="the shipped default model is not in this build")
def test_demo_runs_the_shipped_default_model_as_a_process():
    done = subprocess.run(
        [sys.executable, "-m", "dcrn.app", "demo", "--max-frames", "40"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert len([line for line in done.stdout.splitlines() if line.startswith("synthetic")]) >= 4


def test_scripts_demo_runs_dcrn_demo_for_20_seconds_after_setup():
    script = (REPO / "scripts" / "demo").read_text()
    assert os.access(REPO / "scripts" / "demo", os.X_OK)
    assert "bash scripts/setup" in script and '.venv/bin/dcrn demo --duration 20 "$@"' in script


@pytest.mark.gui
@pytest.mark.skipif(importlib.util.find_spec("PyQt6") is None, reason="PyQt6 is not installed")
def test_demo_gui_opens_the_window_and_closes_on_sigterm(model_path, tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "DCRN_GUI_SETTINGS": str(tmp_path / "gui.ini")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dcrn.app", "demo", "--gui", "--model", str(model_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        time.sleep(6)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
