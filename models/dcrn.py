"""The Deep Convolutional Recurrent Network: per-frame CNN -> recurrent cell -> softmax head.

One set of weights, two forward modes:

* ``forward_sequence(clip)`` for training: the encoder runs on all B*T frames at once, the cell walks T.
* ``step(frame, state)`` for streaming: one frame in, one prediction out, the state handed back.

Running ``step`` frame by frame from ``initial_state`` reproduces ``forward_sequence`` (tested to 1e-5).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .cells import State, build_cell
from .config import DCRNConfig
from .encoders import build_encoder
from .errors import ConfigError


class DCRN(nn.Module):
    def __init__(self, config: DCRNConfig, *, load_pretrained: bool = True) -> None:
        """Build the network; ``load_pretrained=False`` skips ImageNet weights (a checkpoint follows)."""
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config, pretrained=config.pretrained and load_pretrained)
        if config.encoder == "features":  # per-frame vectors (flow / hands / body) made outside the graph
            from .frame_vector import vector_dim

            self.input_shape: tuple[int, ...] = (vector_dim(config.features),)
            self.to_cell_input = nn.Identity()
            self.feature_shape = self.input_shape
        else:
            self.input_shape = (3, config.input_size, config.input_size)
            self._frame_input(config, _output_shape(self.encoder, config.input_size))
        self.cell = build_cell(config.cell, self.feature_shape, config.hidden_size, config.cell_kernel)
        self.state_shapes = [tuple(s) for s in self.cell.state_shapes(self.feature_shape)]
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()] if config.is_conv_cell else []
        head.append(nn.Dropout(config.dropout))
        cell_out = getattr(self.cell, "out_features", config.hidden_size)  # a cell may fix its own output size
        if config.head_hidden:
            head += [nn.Linear(cell_out, config.head_hidden), nn.ReLU(inplace=True)]
            head.append(nn.Linear(config.head_hidden, config.num_classes))
        else:
            head.append(nn.Linear(cell_out, config.num_classes))
        self.head = nn.Sequential(*head)

    def _frame_input(self, config: DCRNConfig, map_shape: tuple[int, int, int]) -> None:
        """Encoder map (C, h, w) -> what the cell reads: the map itself, or a pooled / flattened vector."""
        if config.reads_map:
            self.to_cell_input = nn.Identity()
            self.feature_shape = map_shape
        elif config.pool == "avg":
            self.to_cell_input = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.feature_shape = (map_shape[0],)
        else:
            self.to_cell_input = nn.Flatten()
            self.feature_shape = (map_shape[0] * map_shape[1] * map_shape[2],)

    @property
    def state_names(self) -> tuple[str, ...]:
        return self.cell.state_names

    def initial_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """Zero state for ``batch_size`` streams: a tuple of (B, ...) tensors, never resized later."""
        ref = next(self.parameters())
        device = ref.device if device is None else device
        dtype = ref.dtype if dtype is None else dtype
        return tuple(torch.zeros((batch_size, *shape), device=device, dtype=dtype) for shape in self.state_shapes)

    def example_input(self, batch: int, **kwargs) -> torch.Tensor:
        """Zeros shaped like ``step``'s first input for ``batch`` streams: (B, 3, S, S) frames, or (B, F)
        per-frame vectors for a ``features`` model (``kwargs`` go to ``torch.zeros``)."""
        return torch.zeros((batch, *self.input_shape), **kwargs)

    @property
    def takes_vectors(self) -> bool:
        """Whether ``step`` takes per-frame vectors made outside the graph (keypoints, flow) instead of frames."""
        return self.config.encoder == "features"

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised frames (or (N, F) vectors) -> (N, *feature_shape) cell inputs."""
        return self.to_cell_input(self.encoder(frames))

    def forward_features(self, features: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Run the cell and head over encoded features (B, T, *feature_shape) -> logits (B, T, C), state."""
        batch, steps = features.shape[:2]
        if state is None:
            state = self.initial_state(batch, features.device, features.dtype)
        outputs = []
        for t in range(steps):
            out, state = self.cell(features[:, t], state)
            outputs.append(out)
        hidden = torch.stack(outputs, dim=1).flatten(0, 1)  # (B*T, hidden[, h, w])
        return self.head(hidden).unflatten(0, (batch, steps)), state  # (B, T, C)

    def forward_sequence(
        self, clip: torch.Tensor, state: State | None = None, *, return_state: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, State]:
        """Clip (B, T, 3, H, W) -> logits (B, T, C), a prediction at every frame."""
        batch, steps = clip.shape[:2]
        features = self.encode(clip.flatten(0, 1)).unflatten(0, (batch, steps))  # (B, T, *feature_shape)
        logits, state = self.forward_features(features, state)
        return (logits, state) if return_state else logits

    def step(self, frame: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One frame (B, 3, H, W) and the previous state -> logits (B, C) and the next state."""
        out, state = self.cell(self.encode(frame), state)
        return self.head(out), state

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.forward_sequence(clip)

    def has_foldable_batch_norm(self) -> bool:
        """Whether the seed CNN has BatchNorm layers that ``fold_batch_norm`` folds (torchvision backbones:
        never; their BatchNorms stay as they are)."""
        blocks = getattr(self.encoder, "blocks", None)
        return blocks is not None and any(isinstance(m, nn.BatchNorm2d) for m in blocks)

    @torch.no_grad()
    def fold_batch_norm(self) -> DCRN:
        """Fold each seed-CNN BatchNorm into the convolution before it, in place, for inference.

        An eval-mode BatchNorm is a fixed per-channel affine map, so ``conv -> bn`` becomes one convolution
        with scaled weights and a shifted bias: the same outputs (to float rounding) with one op less per
        block, which matters for eager batch-1 steps. ONNX Runtime and TensorRT do the same when they
        optimise an exported graph. Only for a model in eval mode; it cannot be trained further.
        """
        if self.training:
            raise RuntimeError("fold_batch_norm() is for inference: call model.eval() first")
        if not self.has_foldable_batch_norm():
            return self
        folded: list[nn.Module] = []
        for layer in self.encoder.blocks:
            if isinstance(layer, nn.BatchNorm2d) and folded and isinstance(folded[-1], nn.Conv2d):
                folded[-1] = fuse_conv_bn_eval(folded[-1], layer)
            else:
                folded.append(layer)
        self.encoder.blocks = nn.Sequential(*folded)
        return self


def _output_shape(encoder: nn.Module, size: int) -> tuple[int, int, int]:
    """Per-sample shape of the encoder's feature map for size x size input, found by a dry run."""
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            shape = tuple(encoder(torch.zeros(1, 3, size, size)).shape[1:])
    except RuntimeError as exc:
        raise ConfigError(f"input_size {size} is too small for this encoder ({exc})") from None
    finally:
        encoder.train(was_training)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"the encoder gives an empty feature map at input size {size}: {shape}")
    return shape
