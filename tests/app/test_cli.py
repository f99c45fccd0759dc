"""The ``dcrn`` command: every command of the design is registered and has ``--help``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dcrn.app.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in ("demo", "run", "gui", "train", "eval", "export", "bench", "synth"):
        assert name in out
    assert set(COMMANDS) >= {"demo", "run", "gui", "train", "eval", "export", "bench", "synth"}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    assert "usage: dcrn" in capsys.readouterr().out


def test_console_script_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "dcrn.app", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "DCRN Live" in done.stdout
