"""Preprocess: decoded uint8 RGB frames -> the model's normalised input, on the model's device.

One place for every backend: resize to ``config.input_size`` x ``config.input_size``, scale to [0, 1],
normalise with the checkpoint's mean/std, HWC -> CHW. uint8 crosses the bus, float is made on the device.

The resize matches the one the training and evaluation data went through
(:func:`dcrn.models.video_io.resize_frames`: OpenCV's area interpolation to uint8). Frames in host memory
take exactly that path; frames already on a CUDA device (the GPU FrameRing) are resized there with
antialiased bilinear interpolation, rounded to whole grey levels, which measured within one grey level
(mean absolute difference) of the area resize for 320x240 and 640x480 frames to 112 px.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dcrn.models.config import DCRNConfig
from dcrn.models.video_io import resize_frames


class Preprocessor:
    """Turns a list of (H, W, 3) uint8 frames (any sizes) into one (B, 3, S, S) float batch."""

    def __init__(
        self,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.input_size = int(input_size)
        self.device = torch.device(device)
        self.dtype = dtype
        # x_norm = (x / 255 - mean) / std = x * scale + shift, folded once here.
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device)
        self._scale = (1.0 / (255.0 * std_t)).view(1, 3, 1, 1)  # (1, 3, 1, 1)
        self._shift = (-mean_t / std_t).view(1, 3, 1, 1)  # (1, 3, 1, 1)

    @classmethod
    def from_config(
        cls, config: DCRNConfig, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> Preprocessor:
        return cls(config.input_size, config.mean, config.std, device=device, dtype=dtype)

    def __call__(self, images: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Frames (H, W, 3) uint8, one per stream, or a (B, H, W, 3) uint8 batch -> (B, 3, S, S)."""
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            return self._batch(images)
        if not len(images):
            raise ValueError("preprocess needs at least one frame, got none")
        shapes = {tuple(image.shape) for image in images}
        images = [self._check(image) for image in images]
        if all(image.device.type == "cpu" for image in images):  # host frames: resize there, as training did
            images = [self._resize_host(image) for image in images]
        elif len(shapes) != 1:
            return torch.cat([self._batch(image.unsqueeze(0)) for image in images])
        return self._batch(torch.stack(images))  # (B, H, W, 3) uint8

    def _check(self, image: torch.Tensor) -> torch.Tensor:
        if image.dim() != 3 or image.shape[2] != 3 or image.dtype != torch.uint8:
            raise ValueError(f"frame must be HxWx3 uint8, got {tuple(image.shape)} {image.dtype}")
        return image

    def _resize_host(self, image: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 on the host -> (S, S, 3) uint8, OpenCV area interpolation (the training resize)."""
        if image.shape[0] == self.input_size and image.shape[1] == self.input_size:
            return image
        return torch.from_numpy(resize_frames(np.ascontiguousarray(image.numpy())[None], self.input_size)[0])

    def _batch(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[3] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"frames must be BxHxWx3 uint8, got {tuple(images.shape)} {images.dtype}")
        size = self.input_size
        if images.device.type == "cpu" and (images.shape[1] != size or images.shape[2] != size):
            images = torch.stack([self._resize_host(image) for image in images])  # (B, S, S, 3) uint8
        x = images.to(self.device, non_blocking=True)  # (B, S|H, S|W, 3) uint8, on the device
        x = x.permute(0, 3, 1, 2).float()  # (B, 3, H, W) float in [0, 255]
        if x.shape[2] != size or x.shape[3] != size:  # frames that were on the GPU already
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            x = x.round_().clamp_(0.0, 255.0)  # whole grey levels, as a uint8 resize gives
        x = x * self._scale + self._shift  # (B, 3, S, S) normalised
        return x.to(self.dtype).contiguous()


def preprocess(
    images: Sequence[torch.Tensor] | torch.Tensor,
    config: DCRNConfig,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One-off form of :class:`Preprocessor` (tests, offline evaluation of streamed frames)."""
    return Preprocessor.from_config(config, device=device, dtype=dtype)(images)
