"""Recurrent cells: h_t = cell(f_t, h_{t-1}), with the state passed in and out as explicit tensors.

Every cell has the same small interface, so the DCRN and its exported step graph treat them alike:
``state_shapes(feature_shape)`` gives the per-sample shape of each state tensor, and
``forward(x, state) -> (output, next_state)`` advances one frame.
"""

from __future__ import annotations

import torch
from torch import nn

State = tuple[torch.Tensor, ...]


class GRU(nn.Module):
    """Gated recurrent unit on feature vectors. State: (h,)."""

    state_names = ("h",)

    def __init__(self, in_features: int, hidden: int) -> None:
        super().__init__()
        self.cell = nn.GRUCell(in_features, hidden)
        self.hidden = hidden

    def state_shapes(self, feature_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [(self.hidden,)]

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h = self.cell(x, state[0])  # (B, hidden)
        return h, (h,)


class LSTM(nn.Module):
    """Long short-term memory on feature vectors. State: (h, c)."""

    state_names = ("h", "c")

    def __init__(self, in_features: int, hidden: int) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(in_features, hidden)
        self.hidden = hidden

    def state_shapes(self, feature_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [(self.hidden,), (self.hidden,)]

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h, c = self.cell(x, (state[0], state[1]))  # (B, hidden) each
        return h, (h, c)


class _ConvCell(nn.Module):
    """Shared plumbing of the convolutional cells: the state keeps the feature map's h x w."""

    def __init__(self, in_channels: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.hidden = hidden
        self.padding = kernel // 2

    def state_shapes(self, feature_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        _, height, width = feature_shape
        return [(self.hidden, height, width)] * len(self.state_names)

    def _conv(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True) -> nn.Conv2d:
        return nn.Conv2d(in_channels, out_channels, kernel, padding=self.padding, bias=bias)


class ConvRNN(_ConvCell):
    """The article's ConvRNN: h_t = tanh(W_rc * h_{t-1} + W_cx * x_t + b), * = convolution. State: (h,)."""

    state_names = ("h",)

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3) -> None:
        super().__init__(in_channels, hidden, kernel)
        self.w_cx = self._conv(in_channels, hidden, kernel)  # carries b
        self.w_rc = self._conv(hidden, hidden, kernel, bias=False)

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h = torch.tanh(self.w_rc(state[0]) + self.w_cx(x))  # (B, hidden, h, w)
        return h, (h,)


class ConvGRU(_ConvCell):
    """GRU with convolutions in place of matrix products. State: (h,)."""

    state_names = ("h",)

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3) -> None:
        super().__init__(in_channels, hidden, kernel)
        self.gates = self._conv(in_channels + hidden, 2 * hidden, kernel)  # reset r, update z
        self.candidate = self._conv(in_channels + hidden, hidden, kernel)

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h = state[0]
        r, z = torch.sigmoid(self.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        n = torch.tanh(self.candidate(torch.cat([x, r * h], dim=1)))
        h = (1 - z) * h + z * n  # (B, hidden, h, w)
        return h, (h,)


class ConvGRUDelta(_ConvCell):
    """A ConvGRU that also sees how the feature map changed since the previous frame. State: (h, prev).

    Its input is ``[x_t, x_t - x_{t-1}]``: the map and its frame-to-frame change, where ``x_{t-1}`` is
    the previous frame's map kept in the state. Motion then shows up directly (an edge that moved left
    leaves a signed pattern in the change that a 3x3 kernel can read) instead of having to be learned by
    storing the last map in ``h`` and comparing; a plain ConvGRU of the same size never left chance on
    the synthetic actions, this one learns them. At a stream's first frame ``prev`` is the zero state, so
    the change is the map itself, in training and in streaming alike. The change is taken between
    consecutive frames at the rate they arrive: train on consecutive frames at the stream's frame rate.
    """

    state_names = ("h", "prev")

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3) -> None:
        super().__init__(in_channels, hidden, kernel)
        self.gates = self._conv(2 * in_channels + hidden, 2 * hidden, kernel)  # reset r, update z
        self.candidate = self._conv(2 * in_channels + hidden, hidden, kernel)

    def state_shapes(self, feature_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        _, height, width = feature_shape
        return [(self.hidden, height, width), (self.in_channels, height, width)]

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h, prev = state
        u = torch.cat([x, x - prev], dim=1)  # (B, 2C, h, w)
        r, z = torch.sigmoid(self.gates(torch.cat([u, h], dim=1))).chunk(2, dim=1)
        n = torch.tanh(self.candidate(torch.cat([u, r * h], dim=1)))
        h = (1 - z) * h + z * n  # (B, hidden, h, w)
        return h, (h, x)


class ConvLSTM(_ConvCell):
    """LSTM with convolutions in place of matrix products (Shi et al., 2015). State: (h, c)."""

    state_names = ("h", "c")

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3) -> None:
        super().__init__(in_channels, hidden, kernel)
        self.gates = self._conv(in_channels + hidden, 4 * hidden, kernel)  # i, f, o, g

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)  # (B, hidden, h, w)
        return h, (h, c)


def build_cell(name: str, feature_shape: tuple[int, ...], hidden: int, kernel: int) -> nn.Module:
    """A cell for features of ``feature_shape`` (per sample): (F,) for vector cells, (C, h, w) for conv."""
    if name == "gru":
        return GRU(feature_shape[0], hidden)
    if name == "lstm":
        return LSTM(feature_shape[0], hidden)
    if name == "feature_memory":
        from .memory_cell import FeatureMemory

        return FeatureMemory(feature_shape[0])
    if name == "flow_memory":
        from .flow_cell import FlowMemory

        return FlowMemory(feature_shape)
    if name.startswith("motion_"):
        from .motion_cell import MOTION_CELLS

        return MOTION_CELLS[name](feature_shape[0], hidden)
    conv = {"convrnn": ConvRNN, "convgru": ConvGRU, "convlstm": ConvLSTM, "convgru_delta": ConvGRUDelta}[name]
    return conv(feature_shape[0], hidden, kernel)
