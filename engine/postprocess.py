"""Postprocess: per-frame logits -> smoothed probabilities, a stable label and action events.

Small stateful objects with one verb, one of each per stream:

* :class:`EmaSmoother` / :class:`WindowSmoother` / :class:`NoSmoother`: ``update(probs) -> probs``;
* :class:`Hysteresis`: ``update(probs, frame) -> events``; an action starts when its smoothed probability
  stays at or above its ``on`` threshold for ``min_frames_on`` frames, and ends when it stays below its
  ``off`` threshold for ``min_frames_off`` frames or another action starts. Background classes ("still",
  "none", ...) never start an action;
* :class:`StreamPostprocessor`: both, plus the prediction record of the record schema (docs/pipeline.md).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from dcrn.engine.frames import ACTION_ENDED, ACTION_STARTED, Frame
from dcrn.models.errors import ConfigError

# Labels that mean "no action" when a model has them; they never start action events.
DEFAULT_BACKGROUND = ("background", "none", "no_action", "nothing", "idle", "still", "no_fight", "nofight", "normal")


@dataclass
class PostprocessConfig:
    smoothing: str = "ema"  # "ema" (exponential moving average), "window" (mean of the last frames), "none"
    alpha: float = 0.3  # EMA: weight of the newest frame (1.0 = no smoothing)
    window: int = 8  # window: number of frames averaged
    threshold_on: float = 0.6  # an action starts at or above this smoothed probability ...
    threshold_off: float = 0.4  # ... and ends below this one (hysteresis band in between)
    class_thresholds: dict[str, float] = field(default_factory=dict)  # label -> its own "on" threshold
    min_frames_on: int = 3  # frames at or above "on" before action_started
    min_frames_off: int = 3  # frames below "off" before action_ended
    background: tuple[str, ...] = DEFAULT_BACKGROUND  # labels that never start an action
    top_k: int = 3  # entries in a prediction record's "top" list

    def __post_init__(self) -> None:
        if self.smoothing not in ("ema", "window", "none"):
            raise ConfigError(f"smoothing must be ema, window or none, got {self.smoothing!r}")
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in (0, 1], got {self.alpha}")
        if self.window < 1 or self.min_frames_on < 1 or self.min_frames_off < 1 or self.top_k < 1:
            raise ConfigError("window, min_frames_on, min_frames_off and top_k must be >= 1")
        for name, value in [("threshold_on", self.threshold_on), *self.class_thresholds.items()]:
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"threshold for {name} must be in [0, 1], got {value}")
        if not 0.0 <= self.threshold_off <= self.threshold_on:
            raise ConfigError(f"threshold_off must be in [0, threshold_on], got {self.threshold_off}")

    def thresholds(self, labels: tuple[str, ...]) -> tuple[list[float], list[float]]:
        """Per-class (on, off) thresholds; a class threshold moves the band, keeping its width."""
        unknown = sorted(set(self.class_thresholds) - set(labels))
        if unknown:
            raise ConfigError(f"thresholds given for unknown labels {unknown}; the model has {list(labels)}")
        band = self.threshold_on - self.threshold_off
        on = [self.class_thresholds.get(label, self.threshold_on) for label in labels]
        return on, [max(0.0, t - band) for t in on]


class NoSmoother:
    def update(self, probs: torch.Tensor) -> torch.Tensor:
        return probs


class EmaSmoother:
    """s_t = alpha * p_t + (1 - alpha) * s_{t-1}, starting from the first frame's probabilities."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self._value: torch.Tensor | None = None

    def update(self, probs: torch.Tensor) -> torch.Tensor:
        if self._value is None:
            self._value = probs.clone()
        else:
            self._value = self.alpha * probs + (1.0 - self.alpha) * self._value  # (C,)
        return self._value


class WindowSmoother:
    """Mean of the last ``window`` probability vectors."""

    def __init__(self, window: int) -> None:
        self._history: deque[torch.Tensor] = deque(maxlen=window)

    def update(self, probs: torch.Tensor) -> torch.Tensor:
        self._history.append(probs)
        return torch.stack(tuple(self._history)).mean(dim=0)  # (C,)


def make_smoother(config: PostprocessConfig) -> NoSmoother | EmaSmoother | WindowSmoother:
    if config.smoothing == "ema":
        return EmaSmoother(config.alpha)
    if config.smoothing == "window":
        return WindowSmoother(config.window)
    return NoSmoother()


class Hysteresis:
    """Smoothed probabilities -> action_started / action_ended events for one stream."""

    def __init__(self, labels: tuple[str, ...], config: PostprocessConfig) -> None:
        self.labels = labels
        self.on, self.off = config.thresholds(labels)
        self.min_on = config.min_frames_on
        self.min_off = config.min_frames_off
        background = {name.casefold() for name in config.background}  # "noFight" is "nofight"
        self.candidates = [i for i, label in enumerate(labels) if label.casefold() not in background]
        self.active: int | None = None  # class index of the running action
        self._pending: int | None = None  # class that is above "on", not yet started
        self._pending_frames = 0
        self._below_frames = 0

    def update(self, probs: torch.Tensor, frame: Frame) -> list[dict]:
        """probs (C,) smoothed -> events (0, 1 or 2: an end and a start) for this frame."""
        values = probs.tolist()
        events: list[dict] = []
        best = max(self.candidates, key=values.__getitem__, default=None)
        above = best if best is not None and values[best] >= self.on[best] else None
        if self.active is not None:
            if values[self.active] < self.off[self.active]:
                self._below_frames += 1
            else:
                self._below_frames = 0
            if self._below_frames >= self.min_off:
                events.append(self._event(ACTION_ENDED, self.active, values[self.active], frame))
                self.active = None
        if above is not None and above != self.active:
            self._pending_frames = self._pending_frames + 1 if above == self._pending else 1
            self._pending = above
            if self._pending_frames >= self.min_on:
                if self.active is not None:  # another action took over
                    events.append(self._event(ACTION_ENDED, self.active, values[self.active], frame))
                self.active = above
                self._below_frames = 0
                self._pending, self._pending_frames = None, 0
                events.append(self._event(ACTION_STARTED, above, values[above], frame))
        else:
            self._pending, self._pending_frames = None, 0
        return events

    def finish(self, frame: Frame | None, score: float | None = None) -> list[dict]:
        """The stream stops or restarts: end the running action, if any (every start gets an end)."""
        events = []
        if self.active is not None and frame is not None:
            events.append(self._event(ACTION_ENDED, self.active, score, frame))
        self.active = None
        self._pending, self._pending_frames, self._below_frames = None, 0, 0
        return events

    def _event(self, name: str, index: int, score: float | None, frame: Frame) -> dict:
        return {
            "type": "event",
            "event": name,
            "stream": frame.stream,
            "frame": frame.seq,
            "pts": round(frame.pts, 4),
            "wall": round(frame.wall, 4),
            "label": self.labels[index],
            "score": None if score is None else round(score, 4),
        }


class StreamPostprocessor:
    """One stream's logits (C,) -> (prediction record, event records)."""

    def __init__(self, labels: tuple[str, ...], config: PostprocessConfig | None = None) -> None:
        self.labels = labels
        self.config = config or PostprocessConfig()
        self.top_k = min(self.config.top_k, len(labels))
        self.smoother = make_smoother(self.config)
        self.hysteresis = Hysteresis(labels, self.config)
        self._last_frame: Frame | None = None
        self._last_probs: torch.Tensor | None = None

    @property
    def active(self) -> str | None:
        """The label of the running action, or None."""
        index = self.hysteresis.active
        return None if index is None else self.labels[index]

    def update(self, logits: torch.Tensor, frame: Frame, *, include_logits: bool = False) -> tuple[dict, list[dict]]:
        probs = torch.softmax(logits.detach().float().cpu(), dim=-1)  # (C,)
        smoothed = self.smoother.update(probs)  # (C,)
        events = self.hysteresis.update(smoothed, frame)
        scores, indices = smoothed.topk(self.top_k)
        top = [[self.labels[i], round(s, 4)] for s, i in zip(scores.tolist(), indices.tolist(), strict=True)]
        record = {
            "type": "prediction",
            "stream": frame.stream,
            "frame": frame.seq,
            "pts": round(frame.pts, 4),
            "wall": round(frame.wall, 4),
            "label": top[0][0],
            "score": top[0][1],
            "top": top,
            "latency_ms": None,  # filled in just before the record is written
        }
        if include_logits:
            record["logits"] = [float(v) for v in logits.detach().float().cpu().tolist()]
        self._last_frame, self._last_probs = frame, smoothed
        return record, events

    def reset(self) -> list[dict]:
        """A new sequence starts (discontinuity, lost stream, end): forget history, end a running action."""
        score = None
        if self._last_probs is not None and self.hysteresis.active is not None:
            score = round(float(self._last_probs[self.hysteresis.active]), 4)
        events = self.hysteresis.finish(self._last_frame, score)
        self.smoother = make_smoother(self.config)
        self._last_frame, self._last_probs = None, None
        return events
