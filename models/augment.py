"""Clip-consistent augmentation: one random draw per clip, applied to every frame alike.

Random resized crop, colour jitter (brightness, contrast, saturation) and horizontal flip. A flip only
happens where the labels allow it, through an explicit **flip map**: class index -> the class the
mirrored clip shows (``move_left -> move_right``; ``still -> still``). A clip containing any class that
is missing from the map is never flipped; no flip map means no flips at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import ConfigError


@dataclass(frozen=True)
class AugmentOptions:
    crop_scale: tuple[float, float] = (0.7, 1.0)  # area of the random crop, as a fraction of the frame
    crop_ratio: tuple[float, float] = (0.8, 1.25)  # aspect ratio range of the crop
    brightness: float = 0.2  # gain drawn from [1 - b, 1 + b]
    contrast: float = 0.2  # contrast factor drawn from [1 - c, 1 + c]
    saturation: float = 0.2  # saturation factor drawn from [1 - s, 1 + s]
    flip_p: float = 0.5  # chance of a horizontal flip where the flip map allows one

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"crop scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        if min(self.brightness, self.contrast, self.saturation) < 0 or not 0 <= self.flip_p <= 1:
            raise ConfigError("colour jitter strengths must be >= 0 and the flip chance in [0, 1]")


def parse_flip_map(spec: str | None, classes: Sequence[str]) -> dict[int, int] | None:
    """``none`` | ``all`` (every class mirrors to itself) | ``a:b,c:d,...`` pairs (classes not named keep
    their label; pairs swap both ways) -> class index map, or None for no flipping."""
    if spec is None or spec.strip().lower() in ("", "none", "off"):
        return None
    mapping = {i: i for i in range(len(classes))}
    if spec.strip().lower() in ("all", "symmetric"):
        return mapping
    for pair in spec.split(","):
        left, sep, right = pair.partition(":")
        left, right = left.strip(), right.strip()
        if not sep or left not in classes or right not in classes:
            raise ConfigError(f"flip map entries look like 'move_left:move_right' with known classes; got {pair!r}")
        a, b = classes.index(left), classes.index(right)
        mapping[a], mapping[b] = b, a
    return mapping


def flip_map_from_names(names: Mapping[str, str], classes: Sequence[str]) -> dict[int, int]:
    """A name -> name mirror map (e.g. ``synth.HFLIP``) as class indices; classes outside it are left out."""
    return {classes.index(a): classes.index(b) for a, b in names.items() if a in classes and b in classes}


class ClipAugment:
    """``augment(frames, labels, rng) -> (frames, labels)`` for (T, H, W, 3) uint8 clips, same draw for all T."""

    def __init__(self, options: AugmentOptions, flip_map: Mapping[int, int] | None = None) -> None:
        self.options = options
        self.flip_map = dict(flip_map) if flip_map else None

    def __call__(
        self, frames: np.ndarray, labels: np.ndarray, rng: np.random.Generator, out_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        o = self.options
        t, h, w, _ = frames.shape
        x0, y0, cw, ch = _random_crop(h, w, o.crop_scale, o.crop_ratio, rng)
        out = np.empty((t, out_size, out_size, 3), dtype=np.uint8)
        for i in range(t):
            out[i] = cv2.resize(
                frames[i, y0 : y0 + ch, x0 : x0 + cw], (out_size, out_size), interpolation=cv2.INTER_AREA
            )
        if self.flip_map is not None and rng.uniform() < o.flip_p:
            known = labels[labels >= 0]
            if all(int(c) in self.flip_map for c in np.unique(known)):
                out = out[:, :, ::-1]
                labels = np.array([self.flip_map[int(c)] if c >= 0 else c for c in labels], dtype=labels.dtype)
        if o.brightness or o.contrast or o.saturation:
            out = _color_jitter(out, rng, o.brightness, o.contrast, o.saturation)
        return np.ascontiguousarray(out), labels


def _random_crop(
    h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        cw, ch = round(np.sqrt(area * aspect)), round(np.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    return 0, 0, w, h


def _color_jitter(clip: np.ndarray, rng: np.random.Generator, b: float, c: float, s: float) -> np.ndarray:
    x = clip.astype(np.float32)  # (T, H, W, 3)
    x *= rng.uniform(1 - b, 1 + b)
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - c, 1 + c) + mean
    grey = x.mean(axis=3, keepdims=True)
    x = (x - grey) * rng.uniform(1 - s, 1 + s) + grey
    return np.clip(x, 0, 255).astype(np.uint8)
