"""scripts/measure/fault_run.py in its short form: a real ``dcrn run`` against a real RTSP camera with a password,
killed once and frozen once; every check of the long run holds."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from tests.fixtures.paths import REPO
from tests.fixtures.rtsp import unavailable_reason

pytestmark = [pytest.mark.rtsp, pytest.mark.slow]


def test_fault_run_loses_and_restores_the_stream_once_per_fault_and_leaks_no_password(tmp_path):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    args = ["--kills", "1", "--freezes", "1", "--freeze-s", "4", "--down-s", "1", "--up-s", "1.5"]
    args += ["--out", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "scripts.measure.fault_run", *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert all(summary["checks"].values()), summary["checks"]
    assert summary["events"]["stream_lost"] == 2 and summary["events"]["stream_restored"] == 2
    assert summary["figures"]["freeze"]["lost_after_s_max"] < 3.0 + 1.5  # the default 3 s stall time
    rows = list(csv.DictReader((tmp_path / "faults.csv").open()))
    assert [row["kind"] for row in rows] == ["kill", "freeze"]
    assert "stall" in rows[1]["detail"] or "no data" in rows[1]["detail"]
