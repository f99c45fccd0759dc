"""Networks, data, training, evaluation, export and checkpoints. Imports nothing from engine or app.

The names below load on first use (PEP 562), so that ``import dcrn.models.errors`` (which the command
line needs for ``--help``) does not import torch through the checkpoint code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checkpoint import load_checkpoint, read_checkpoint, resolve_model, save_checkpoint, shipped_models
    from .config import DCRNConfig
    from .dcrn import DCRN
    from .errors import BadCheckpoint, CheckpointNotFound, ConfigError, DcrnError, PretrainedWeightsUnavailable

# public name -> the submodule that defines it
_LAZY = {
    "DCRN": "dcrn",
    "DCRNConfig": "config",
    "BadCheckpoint": "errors",
    "CheckpointNotFound": "errors",
    "ConfigError": "errors",
    "DcrnError": "errors",
    "PretrainedWeightsUnavailable": "errors",
    "load_checkpoint": "checkpoint",
    "read_checkpoint": "checkpoint",
    "resolve_model": "checkpoint",
    "save_checkpoint": "checkpoint",
    "shipped_models": "checkpoint",
}

__all__ = [
    "DCRN",
    "BadCheckpoint",
    "CheckpointNotFound",
    "ConfigError",
    "DCRNConfig",
    "DcrnError",
    "PretrainedWeightsUnavailable",
    "load_checkpoint",
    "read_checkpoint",
    "resolve_model",
    "save_checkpoint",
    "shipped_models",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
