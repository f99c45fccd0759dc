"""A recurrent cell that sees how fast the picture changes, for small real-footage data sets.

On surveillance footage a single frame's appearance says little about what happens in it; how fast the
picture changes says more (fights are fast, close and chaotic). A plain GRU on pooled CNN features can only
see change by remembering the previous features in its small state, which it does badly on a few hundred
clips. This cell keeps what it needs in explicit state tensors instead, so each step costs the same and
an all-zero state is a fresh stream (a reset state slot needs nothing special):

* ``motion_avg``: a running average (over the last ``WINDOW`` frames at most) of the standardised frame
  features ``z_t`` and of their change ``c_t = |z_t - e_{t-1}|`` against a short moving average ``e`` of
  the previous frames; the output is a learned linear map of that average (``hidden_size`` units), taken
  in units of how much each average varies between training clips.
  State ``(avg, ema, count)``. On clips this is a linear classifier of [mean features, mean change] that
  gives an answer at every frame.

A GRU over ``[z_t, c_t]`` was tried too; on a few hundred clips it overfit where the average did not.

Standardisation: ``z = (f - mean) / std`` with per-feature buffers that ``dcrn train`` fits on the training
set's features when the encoder is frozen (``fit_input_stats``); they travel in the checkpoint. Training
with ``--loss-skip-frames`` (e.g. 8) leaves the first frames of each item, whose average is still mostly one
frame's appearance, out of the loss: otherwise the model learns to tell scenes apart rather than actions.
Changes are taken between *consecutive* frames at the rate the stream delivers them: train on consecutive
frames (``--sampling consecutive --stride 1``) of footage at the camera's frame rate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

State = tuple[torch.Tensor, ...]

WINDOW = 64  # motion_avg: frames averaged at most (the exact mean over a clip's first 64 frames, then a decay)
EMA_RATE = 0.5  # weight of the newest frame in the short average that changes are measured against
INPUT_DROPOUT = 0.5  # on the cell's learned input weights, training only: little data, 2 * F inputs


class _MotionInput(nn.Module):
    """Standardised features and their change since the last frames: ``[z_t, c_t]`` and the next ``ema``."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.register_buffer("input_mean", torch.zeros(in_features))
        self.register_buffer("input_std", torch.ones(in_features))

    @torch.no_grad()
    def fit_input_stats(self, clips: Sequence[np.ndarray]) -> None:
        """Per-feature mean and standard deviation of the training clips' (T_i, F) frame features."""
        x = torch.as_tensor(np.concatenate(clips).astype(np.float32))  # (N, F)
        self.input_mean.copy_(x.mean(0))
        self.input_std.copy_(x.std(0).clamp_min(1e-3))

    def motion(self, x: torch.Tensor, ema: torch.Tensor, seen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = (x - self.input_mean) / self.input_std  # (B, F)
        change = seen * (z - ema).abs()  # (B, F); 0 at a stream's first frame
        ema = seen * (ema + EMA_RATE * (z - ema)) + (1 - seen) * z
        return torch.cat([z, change], dim=1), ema  # (B, 2F), (B, F)


class MotionAverage(_MotionInput):
    """Linear map of the running average of ``[z_t, c_t]``. State: (avg, ema, count)."""

    state_names = ("avg", "ema", "count")

    def __init__(self, in_features: int, hidden: int) -> None:
        super().__init__(in_features)
        self.hidden = hidden
        self.register_buffer("avg_mean", torch.zeros(2 * in_features))  # the averages over whole training clips
        self.register_buffer("avg_std", torch.ones(2 * in_features))
        self.dropout = nn.Dropout(INPUT_DROPOUT)
        self.out = nn.Linear(2 * in_features, hidden)

    def state_shapes(self, feature_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [(2 * self.in_features,), (self.in_features,), (1,)]

    @torch.no_grad()
    def fit_input_stats(self, clips: Sequence[np.ndarray]) -> None:
        """Frame statistics, then the spread of the clip averages across clips: the output layer sees each
        average in units of how much it varies from clip to clip (a change averaged over a clip varies far
        less than a single frame's)."""
        super().fit_input_stats(clips)
        finals = []
        for clip in clips:
            state = tuple(torch.zeros(1, *shape) for shape in self.state_shapes(()))
            for x in torch.as_tensor(np.asarray(clip, dtype=np.float32)):
                state = self._advance(x[None], state)
            finals.append(state[0][0])
        finals = torch.stack(finals)  # (clips, 2F)
        self.avg_mean.copy_(finals.mean(0))
        self.avg_std.copy_(finals.std(0).clamp_min(1e-3))

    def _advance(self, x: torch.Tensor, state: State) -> State:
        avg, ema, count = state  # (B, 2F), (B, F), (B, 1)
        u, ema = self.motion(x, ema, (count > 0).to(x.dtype))  # (B, 2F)
        count = torch.clamp(count + 1, max=WINDOW)
        avg = avg + (u - avg) / count  # the exact mean for the first WINDOW frames, then a decaying average
        return avg, ema, count

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        state = self._advance(x, state)
        avg = (state[0] - self.avg_mean) / self.avg_std  # (B, 2F)
        return self.out(self.dropout(avg)), state  # (B, hidden)


MOTION_CELLS = {"motion_avg": MotionAverage}
