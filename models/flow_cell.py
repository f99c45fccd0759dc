"""A recurrent cell that sees where and how things move: optical flow per frame, then a fixed temporal memory.

Pooled ImageNet features are nearly blind to the direction of motion, and with a few clips per class a
learned recurrent cell memorises appearance instead. This cell measures motion directly and learns only
the readout, so a handful of clips is enough and nothing it learns can be a scene's appearance:

1. **Flow** (per frame, no learned weights). On the feature map ``x_t`` (for the ``luma`` encoder: the
   frame's contrast-normalised brightness) and the previous frame's map kept in the state, Lucas-Kanade
   optical flow is solved in closed form on a G x G grid of cells, at up to three scales (the map, and
   halved twice, so fast motion that is many pixels per frame at full size is sub-pixel at a coarse scale).
   Per cell and scale: rightward, leftward, downward and upward speed (rectified, so a linear readout can
   tell "moves left" from "does not move right") and the motion energy (mean squared change); the same for
   the whole map as one cell; and the divergence and curl of the grid's flow (zooming and turning), rectified
   too. Multi-channel maps sum their structure tensors over channels.
2. **Memory** (the recurrent state, fixed and linear): :class:`~dcrn.models.memory_cell.GammaMemory`, three
   chains of leaky integrators from fast to slow, which hold what moved *recently* and what moved *before
   that*: order, not only content. Each frame costs the same however long the stream runs.
3. **Readout**: the memory, standardised by statistics fitted on the training frames, goes to the DCRN's
   linear head (the only learned weights, fitted by ``dcrn teach`` in seconds).

State ``(prev, memory, seen)``; all zeros is a fresh stream (``seen`` = 0 makes the first frame's change
zero rather than the whole picture). Every operation is a fixed convolution, pooling or element-wise op,
so the step exports to ONNX like any other cell. Changes are measured between consecutive frames at the
rate the stream delivers them: train on footage at the camera's frame rate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .memory_cell import RATES, STAGES, GammaMemory

State = tuple[torch.Tensor, ...]

GRID = 4  # flow cells per side at each scale (fewer where a map is smaller)
SCALES = 3  # the map, then halved twice (while it stays at least GRID wide)
REGULARISER = 1e-3  # added to the structure tensor's diagonal: textureless cells report no motion, not noise
MAX_SPEED = 3.0  # pixels per frame at a scale: beyond this Lucas-Kanade is no longer valid there
CHANNELS = 5  # right, left, down, up, energy


__all__ = ["RATES", "STAGES", "FlowMemory"]


class FlowMemory(GammaMemory):
    """Grid optical flow of the feature map, carried through a fixed gamma memory. State: (prev, memory, seen)."""

    state_names = ("prev", "memory", "seen")

    def __init__(self, feature_shape: Sequence[int]) -> None:
        super().__init__()
        channels, height, width = feature_shape
        self.map_shape = (channels, height, width)
        self.levels: list[tuple[int, tuple[int, int]]] = []  # per scale: (grid, pooling window of one cell)
        h, w = height, width
        for _ in range(SCALES):
            if min(h, w) < 2:
                break
            grid = GRID if h % GRID == 0 and w % GRID == 0 and min(h, w) >= GRID else 1
            self.levels.append((grid, (h // grid, w // grid)))
            if h % 2 or w % 2 or min(h, w) // 2 < GRID:
                break
            h, w = h // 2, w // 2
        self.grids = [grid for grid, _ in self.levels]
        self._init_memory(sum(CHANNELS * (g * g + 1) + 4 if g > 1 else CHANNELS for g in self.grids))
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
        self.register_buffer("kernels", torch.stack([sobel, sobel.T])[:, None])  # (2, 1, 3, 3): d/dx, d/dy
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, GRID), torch.linspace(-1, 1, GRID), indexing="ij")
        self.register_buffer("positions", torch.stack([xs, ys]) / (GRID * GRID))  # (2, G, G): cell centres

    def state_shapes(self, feature_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [self.map_shape, (self.out_features,), (1,)]

    def frame_features(self, x: torch.Tensor, prev: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """Maps (N, C, H, W) now and one frame before, ``seen`` (N, 1) 0 at a stream's first frame -> (N, F)."""
        out = []
        now, before = x, prev
        for grid, window in self.levels:
            products = self._products(now, before, seen)  # (N, 6, H, W)
            out.append(self._flow(F.avg_pool2d(products, window), grid))
            if grid > 1:
                out.append(self._flow(products.mean(dim=(2, 3), keepdim=True), 1))  # the whole map as one cell
            now, before = F.avg_pool2d(now, 2), F.avg_pool2d(before, 2)
        return torch.cat(out, dim=1)  # (N, F)

    def _products(self, now: torch.Tensor, before: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """Structure-tensor products of the brightness constancy equation, summed over channels."""
        mid = (now + before).flatten(0, 1)[:, None] / 2  # (N * C, 1, H, W)
        grads = F.conv2d(F.pad(mid, (1, 1, 1, 1), mode="replicate"), self.kernels)  # (N * C, 2, H, W)
        grads = grads.unflatten(0, (now.shape[0], now.shape[1]))  # (N, C, 2, H, W)
        ix, iy = grads[:, :, 0], grads[:, :, 1]  # (N, C, H, W)
        it = (now - before) * seen[:, :, None, None]
        return torch.stack([ix * ix, iy * iy, ix * iy, ix * it, iy * it, it * it], dim=1).sum(2)  # (N, 6, H, W)

    def _flow(self, cells: torch.Tensor, grid: int) -> torch.Tensor:
        """Lucas-Kanade on each cell's summed products (N, 6, G, G) -> rectified flow, energy [, div, curl]."""
        ixx, iyy, ixy, ixt, iyt, itt = (cells[:, k] + (REGULARISER if k < 2 else 0.0) for k in range(6))
        det = ixx * iyy - ixy * ixy
        vx = ((ixy * iyt - iyy * ixt) / det).clamp(-MAX_SPEED, MAX_SPEED)  # (N, G, G) pixels per frame
        vy = ((ixy * ixt - ixx * iyt) / det).clamp(-MAX_SPEED, MAX_SPEED)
        channels = [F.relu(vx), F.relu(-vx), F.relu(vy), F.relu(-vy), itt.sqrt()]
        out = torch.stack(channels, dim=1).flatten(1)  # (N, 5 * G * G)
        if grid == 1:
            return out
        xs, ys = self.positions  # divergence (zoom) and curl (turning) of the flow field over the grid
        div = (vx * xs + vy * ys).sum(dim=(1, 2))[:, None]  # (N, 1)
        curl = (vy * xs - vx * ys).sum(dim=(1, 2))[:, None]
        return torch.cat([out, F.relu(div), F.relu(-div), F.relu(curl), F.relu(-curl)], dim=1)

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        prev, memory, seen = state  # (B, C, H, W), (B, out), (B, 1)
        memory = self.advance_memory(self.frame_features(x, prev, seen), memory)
        out = (memory - self.out_mean) / self.out_std  # (B, out)
        return out, (x, memory, torch.ones_like(seen))
