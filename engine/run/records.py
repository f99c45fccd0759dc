"""Event records that the runners build themselves (prediction and stats records come from
:mod:`dcrn.engine.postprocess` and :mod:`dcrn.engine.stats`). docs/pipeline.md lists every field."""

from __future__ import annotations

import time
from collections.abc import Sequence

from dcrn.engine.frames import StreamEvent


def event_record(event: StreamEvent) -> dict:
    """A stream event (lost, restored, ended, changed, ...) as an ``event`` record."""
    record = {
        "type": "event",
        "event": event.event,
        "stream": event.stream,
        "frame": event.frame,
        "pts": round(event.pts, 4),
        "wall": round(event.wall, 4),
        "label": None,
        "score": None,
    }
    if event.detail:
        record["detail"] = event.detail
    return record


def model_changed_record(stream: str, frame: int, pts: float, model: str, labels: Sequence[str]) -> dict:
    """``stream`` runs on checkpoint ``model`` (with ``labels``) from the frame after ``frame`` on."""
    return {
        "type": "event",
        "event": "model_changed",
        "stream": stream,
        "frame": frame,
        "pts": round(pts, 4),
        "wall": round(time.time(), 4),
        "label": None,
        "score": None,
        "detail": f"{model}: {', '.join(labels)}",
        "model": model,
        "labels": list(labels),
    }
