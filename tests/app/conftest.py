"""Fixtures shared by the desktop-window tests."""

from __future__ import annotations

import pytest

from dcrn.models import DCRN, DCRNConfig, save_checkpoint, shipped_models
from dcrn.models.synth import CLASSES


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    """The shipped default model when it is installed, else a small freshly initialised one."""
    if "default" in shipped_models():
        return "default"
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    config = DCRNConfig(num_classes=len(CLASSES), labels=CLASSES, encoder_widths=(8, 16), hidden_size=32, input_size=64)
    save_checkpoint(path, DCRN(config))
    return str(path)
