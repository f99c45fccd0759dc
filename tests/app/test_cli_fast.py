"""``dcrn --help`` and ``dcrn CMD --help`` stay fast: they import no runtime (torch, OpenCV, Qt, ...)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dcrn.app.cli import COMMANDS

HEAVY = ("torch", "cv2", "PyQt6", "onnxruntime", "openvino", "ray", "tensorrt", "av")

# Runs the command line's main in a fresh interpreter and prints the heavy modules it left loaded.
PROBE = """
import json, sys
from dcrn.app.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def heavy_modules_after(argv: list[str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "usage: dcrn" in done.stdout
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_top_level_help_imports_no_runtime():
    assert heavy_modules_after(["--help"]) == []


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_help_imports_no_runtime(name):
    assert heavy_modules_after([name, "--help"]) == []
