"""One error tree for the whole project.

Every error DCRN Live raises on purpose derives from :class:`DcrnError`, and each subclass also
derives from the builtin it resembles, so callers can catch either (``except BadCheckpoint`` or
``except ValueError``). The command line turns a ``DcrnError`` into one line and a non-zero exit.
"""

from __future__ import annotations


class DcrnError(Exception):
    """Root of every error DCRN Live raises on purpose."""


class ConfigError(DcrnError, ValueError):
    """A configuration value is out of range or names something that does not exist."""


class CheckpointNotFound(DcrnError, FileNotFoundError):
    """A checkpoint path does not exist and is not the name of a shipped model."""


class BadCheckpoint(DcrnError, ValueError):
    """A checkpoint file exists but is truncated, corrupt, or not a DCRN checkpoint."""


class PretrainedWeightsUnavailable(DcrnError, RuntimeError):
    """ImageNet weights were asked for but are neither in torch's cache nor downloadable."""


class DataError(DcrnError, ValueError):
    """A data set folder, split list or video file cannot be used for training or evaluation."""
