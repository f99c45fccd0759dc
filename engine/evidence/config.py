"""The evidence recorder's configuration and its error."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dcrn.models.errors import ConfigError, DcrnError

CODECS = ("auto", "libx264", "mpeg4")  # auto: libx264 where this PyAV build has it, else mpeg4
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")  # libx264 speed presets


class EvidenceError(DcrnError, OSError):
    """The evidence folder cannot be created or written, or a clip cannot be encoded."""


@dataclass
class EvidenceConfig:
    pre_s: float = 3.0  # video kept before action_started (pre-roll), seconds
    post_s: float = 2.0  # video kept after action_ended (post-roll), seconds
    max_s: float = 60.0  # longest clip, pre-roll included, seconds; the clip of a longer action closes there
    max_mb: float | None = 5000.0  # retention: total size of the folder's clips and snapshots, MB (None: no limit)
    max_age_days: float | None = 30.0  # retention: clips and snapshots older than this are deleted (None: keep)
    gop_s: float = 1.0  # a keyframe at least this often; a clip starts at most this much before its pre-roll
    codec: str = "auto"  # libx264 (H.264), mpeg4 (MPEG-4 part 2), or auto: libx264 when PyAV has it
    preset: str = "ultrafast"  # libx264 speed preset (each step slower gives smaller files for more CPU)
    crf: int = 23  # libx264 quality, 0-51 (lower: better and larger); mpeg4 maps it to a fixed quantiser
    max_fps: float | None = None  # encode at most this many frames a second per stream (None: every frame)
    queue_frames: int = 8  # frames waiting for a stream's encoder; beyond that frames are left out, never waited on
    jpeg_quality: int = 90  # snapshot JPEG quality, 1-100

    def __post_init__(self) -> None:
        for name in ("pre_s", "post_s", "gop_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"evidence {name} must be a finite number >= 0, got {value!r}")
        if self.gop_s <= 0:
            raise ConfigError(f"evidence gop_s must be > 0, got {self.gop_s!r}")
        if not (math.isfinite(self.max_s) and self.max_s > 0):
            raise ConfigError(f"evidence max_s must be a finite number > 0, got {self.max_s!r}")
        for name in ("max_mb", "max_age_days", "max_fps"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"evidence {name} must be > 0 or None, got {value!r}")
        if self.codec not in CODECS:
            raise ConfigError(f"evidence codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if self.preset not in PRESETS:
            raise ConfigError(f"evidence preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"evidence crf must be in 0-51, got {self.crf!r}")
        if self.queue_frames < 1:
            raise ConfigError(f"evidence queue_frames must be >= 1, got {self.queue_frames!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"evidence jpeg_quality must be in 1-100, got {self.jpeg_quality!r}")

    @property
    def max_bytes(self) -> int | None:
        return None if self.max_mb is None else int(self.max_mb * 1e6)

    @property
    def max_age_s(self) -> float | None:
        return None if self.max_age_days is None else self.max_age_days * 86400.0
