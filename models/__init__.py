"""Networks, data, training, evaluation, export and checkpoints. Imports nothing from engine or app."""

from .checkpoint import load_checkpoint, read_checkpoint, resolve_model, save_checkpoint, shipped_models
from .config import DCRNConfig
from .dcrn import DCRN
from .errors import BadCheckpoint, CheckpointNotFound, ConfigError, DcrnError, PretrainedWeightsUnavailable

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
