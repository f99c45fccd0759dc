"""An output that cannot be written stops the command in one line before the work, not after it."""

from __future__ import annotations

import time

import pytest

from dcrn.app.argtypes import check_writable

# (command and the arguments it needs, output option)
OUTPUTS = [
    (["teach", "--data", "{tmp}/ds"], "--out"),
    (["teach", "--data", "{tmp}/ds", "--out", "{tmp}/m.pt"], "--json"),
    (["export"], "--out"),
    (["eval", "--data", "{tmp}/ds"], "--json"),
    (["eval", "--data", "{tmp}/ds"], "--report"),
    (["bench", "--model", "init"], "--json"),
    (["train", "--data", "{tmp}/ds"], "--out"),
    (["synth"], "--out"),
    (["record", "--source", "synthetic:", "--label", "wave"], "--out"),
]


@pytest.mark.parametrize(("args", "option"), OUTPUTS, ids=[f"{a[0]} {o}" for a, o in OUTPUTS])
def test_an_output_under_a_file_is_refused_before_any_work(tmp_path, cli, args, option):
    (tmp_path / "blocker").write_text("a file, not a folder")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    start = time.monotonic()
    result = cli(*args, option, str(tmp_path / "blocker" / "out"))
    assert time.monotonic() - start < 5
    result.refused(args[0], f"argument {option}", "is not a folder")


def test_a_file_output_that_is_a_folder_is_refused(tmp_path, cli):
    (tmp_path / "m.onnx").mkdir()
    cli("export", "--out", str(tmp_path / "m.onnx")).refused("export", "it is a folder")


def test_an_output_folder_that_is_a_file_is_refused(tmp_path, cli):
    (tmp_path / "report").write_text("x")
    cli("eval", "--data", str(tmp_path), "--report", str(tmp_path / "report")).refused("eval", "not a folder")


def test_eval_json_into_a_folder_that_cannot_be_made_fails_before_evaluating(tmp_path, cli):
    result = cli("eval", "--data", str(tmp_path), "--json", "/proc/dcrn-nowhere/metrics.json")
    result.refused("eval", "argument --json", "not writable")


def test_checking_creates_nothing(tmp_path):
    assert check_writable(tmp_path / "a" / "b" / "m.pt") == tmp_path / "a" / "b" / "m.pt"
    assert check_writable(tmp_path / "new-folder", folder=True) == tmp_path / "new-folder"
    assert list(tmp_path.iterdir()) == []
