"""The fixed multi-timescale memory of the taught models, and the cell that carries per-frame vectors in it.

A taught model learns only its linear head; what it remembers is fixed and linear: three chains of
``STAGES`` leaky integrators, from fast to slow (``RATES``). Stage k of a chain is a gamma kernel over the
past peaking k-1 steps of its time constant back, so the stages hold what happened *recently* and what
happened *before that*: order, not only content ("down then up" differs from "up then down"). Each frame
costs the same however long the stream runs, and since the memory is linear and works on every input
element apart, the memory of concatenated vectors is the concatenation of their memories.

:class:`GammaMemory` is that memory (shared with :class:`~dcrn.models.flow_cell.FlowMemory`);
:class:`FeatureMemory` is the cell of the ``features`` encoder: its input is the per-frame vector computed
outside the step graph (flow, hands, body: :mod:`dcrn.models.frame_vector`), its state the memory alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

State = tuple[torch.Tensor, ...]

RATES = (0.3, 0.08, 0.025)  # per-frame update rates of the chains (time constants at 30 fps: 0.1, 0.4, 1.3 s)
STAGES = 3  # leaky integrators per chain


class GammaMemory(nn.Module):
    """``len(RATES)`` chains of ``STAGES`` leaky integrators over ``in_features`` inputs, and the fitted
    standardisation of its output (``out_mean``, ``out_std``)."""

    def _init_memory(self, in_features: int) -> None:
        self.in_features = in_features  # per frame
        self.out_features = len(RATES) * STAGES * in_features
        self.register_buffer("rates", torch.tensor(RATES).repeat_interleave(STAGES * in_features))
        self.register_buffer("out_mean", torch.zeros(self.out_features))  # fitted when taught
        self.register_buffer("out_std", torch.ones(self.out_features))

    def advance_memory(self, u: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """One step of every integrator chain: frame features (N, F), memory (N, out) -> next memory."""
        chains = memory.unflatten(1, (len(RATES), STAGES, self.in_features))  # (N, R, S, F)
        rates = self.rates.view(len(RATES), STAGES, self.in_features)
        inputs = torch.cat([u[:, None, None].expand(-1, len(RATES), 1, -1), chains[:, :, :-1]], dim=2)
        return (chains + rates * (inputs - chains)).flatten(1)  # stage k follows stage k-1 (stage 1: the input)

    @torch.no_grad()
    def memory_trajectory(self, features: torch.Tensor) -> torch.Tensor:
        """Frame features of one clip (T, F), from a fresh state -> the memory after each frame (T, out)."""
        memory = features.new_zeros(1, self.out_features)
        out = []
        for u in features:
            memory = self.advance_memory(u[None], memory)
            out.append(memory[0])
        return torch.stack(out) if out else features.new_zeros(0, self.out_features)

    @torch.no_grad()
    def fit_output_stats(self, memories: Sequence[np.ndarray]) -> None:
        """Per-unit mean and standard deviation of the memory over training frames (list of (T_i, out))."""
        x = torch.as_tensor(np.concatenate(memories).astype(np.float32))
        self.out_mean.copy_(x.mean(0))
        self.out_std.copy_(x.std(0).clamp_min(1e-4))

    def input_index(self) -> np.ndarray:
        """(out,) which input element every memory unit integrates (for explanations)."""
        return np.tile(np.arange(self.in_features), len(RATES) * STAGES)


class FeatureMemory(GammaMemory):
    """Per-frame vectors (B, F) computed outside the graph, carried in the gamma memory. State: (memory,)."""

    state_names = ("memory",)

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self._init_memory(in_features)

    def state_shapes(self, feature_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [(self.out_features,)]

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        (memory,) = state  # (B, out)
        memory = self.advance_memory(x, memory)
        return (memory - self.out_mean) / self.out_std, (memory,)
