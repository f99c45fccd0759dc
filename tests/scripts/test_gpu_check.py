"""scripts/gpu_check.py stays runnable: its CPU dry run, from the folders, without the installed package."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.fixtures.paths import REPO

# The child blocks the installed `dcrn` package, so the script must fall back on its import shim, as it
# does on a GPU machine that has the repository copied but not installed.
_RUN_UNINSTALLED = (
    "import runpy, sys\n"
    "sys.modules['dcrn'] = None\n"
    "sys.argv = ['gpu_check.py', *sys.argv[1:]]\n"
    "runpy.run_path('scripts/gpu_check.py', run_name='__main__')\n"
)


def test_gpu_check_dry_run_passes_from_the_folders_and_writes_json(tmp_path):
    args = ["--cpu-dry-run", "--batches", "1,2", "--iters", "1", "--warmup", "1", "--out", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-c", _RUN_UNINSTALLED, *args], capture_output=True, text=True, timeout=280, cwd=REPO
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["info"]["imports"].startswith("import shim")
    statuses = {check["check"]: check["status"] for check in report["checks"]}
    assert statuses["torch eager float32 parity vs CPU fp32"] == "PASS"
    assert statuses["torch eager float16 parity vs CPU fp32"] == "PASS"
    assert statuses["ring upload correct"] == "PASS"
    assert {(t["dtype"], t["batch"]) for t in report["timings"]} >= {("float32", 1), ("float16", 2)}
    assert "| check | status | detail |" in result.stdout
