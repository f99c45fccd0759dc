"""Evidence of actions: an encoded pre-roll per stream, an mp4 clip and a JPEG snapshot per action,
and retention of the folder that holds them. :class:`EvidenceRecorder` is the one entry point."""

from __future__ import annotations

from dcrn.engine.evidence.config import EvidenceConfig, EvidenceError
from dcrn.engine.evidence.recorder import EvidenceRecorder, EvidenceStats

__all__ = ["EvidenceConfig", "EvidenceError", "EvidenceRecorder", "EvidenceStats"]
