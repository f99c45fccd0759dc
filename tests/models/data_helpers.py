"""Small generated media for the data, training and evaluation tests (written into tmp_path)."""

from __future__ import annotations

from pathlib import Path

from dcrn.models.synth import CLASSES
from dcrn.models.synth_dataset import SynthOptions, write_synthetic

SIZE = (48, 64)


def tiny_synthetic_set(
    out: Path, *, clips_per_class: int = 2, clip_frames: int = 10, stream_s: float = 3.0, seed: int = 0
) -> Path:
    """A few clips of every class plus one short labelled stream, at a small frame size."""
    write_synthetic(
        SynthOptions(
            out=out,
            seed=seed,
            clips_per_class=clips_per_class,
            clip_frames=clip_frames,
            stream_s=stream_s,
            segment_s=(0.3, 0.8),
            size=SIZE,
        )
    )
    return out


__all__ = ["CLASSES", "SIZE", "tiny_synthetic_set"]
