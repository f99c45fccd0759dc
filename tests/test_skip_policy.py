"""The skip policy in tests/conftest.py: with ``CI`` set, only a missing GPU or camera device may skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TESTS = """
import pytest

def test_passes():
    pass

def test_needs_a_gpu():
    pytest.skip("needs a CUDA GPU")

def test_needs_a_camera():
    pytest.skip("no camera device on this machine (/dev/video0)")

def test_needs_a_package():
    pytest.skip("GStreamer elements missing for the RTSP test server: timeoverlay")
"""

MODULE_SKIP = """
import pytest

pytest.importorskip("no_such_module_for_the_skip_policy")

def test_never_runs():
    pass
"""


def run_pytest(tmp_path: Path, ci: str | None, files: dict[str, str]) -> subprocess.CompletedProcess:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    args = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-o", "addopts="]
    args += ["--rootdir", str(tmp_path), str(tmp_path)]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_under_ci_a_skip_for_a_missing_package_fails_the_run_with_its_reason(tmp_path):
    result = run_pytest(tmp_path, "true", {"test_policy.py": TESTS})
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 passed, 2 skipped" in result.stdout
    assert "test_needs_a_package" in result.stdout and "timeoverlay" in result.stdout


def test_under_ci_skips_for_a_missing_gpu_or_camera_are_accepted_and_listed(tmp_path):
    result = run_pytest(tmp_path, "1", {"test_policy.py": TESTS.split("def test_needs_a_package")[0]})
    assert result.returncode == 0, result.stdout
    assert "skips accepted (CI: missing GPU or camera device only)" in result.stdout
    assert "1 x needs a CUDA GPU" in result.stdout and "1 x no camera device" in result.stdout


def test_under_ci_a_module_skipped_at_collection_fails_the_run(tmp_path):
    files = {"test_policy.py": "def test_passes():\n    pass\n", "test_mod.py": MODULE_SKIP}
    result = run_pytest(tmp_path, "true", files)
    assert result.returncode == 1, result.stdout
    assert "skips refused under CI" in result.stdout and "no_such_module_for_the_skip_policy" in result.stdout


def test_without_ci_every_skip_is_accepted_and_listed(tmp_path):
    for ci in (None, "0", "false"):
        result = run_pytest(tmp_path, ci, {"test_policy.py": TESTS})
        assert result.returncode == 0, result.stdout
        assert "skips accepted (CI not set: any reason)" in result.stdout and "1 x GStreamer elements" in result.stdout
