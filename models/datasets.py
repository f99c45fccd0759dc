"""PyTorch data sets over a :class:`~dcrn.models.data.DataIndex`: clips and stream windows with per-frame labels.

Every item is ``(frames, labels)``: frames (T, S, S, 3) uint8 RGB at the model's input size, labels (T,)
int64 class indices with -1 for frames that carry no label (padding of short clips, unlabelled stream
frames); the loss ignores -1. A clip's label is repeated on all its frames; a stream gives windows of T
consecutive frames whose labels change wherever the action changes, which is what teaches a stateful
model to switch.

Decoding happens in ``__getitem__`` (so in DataLoader workers when there are any), or once up front into
memory with ``preload`` (``cache=True``); streams are always held in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import ClipAugment
from .data import DataIndex, Sample
from .errors import ConfigError, DataError
from .video_io import count_frames, read_frame_labels, read_video

log = logging.getLogger(__name__)

SAMPLING_MODES = ("consecutive", "random_stride", "uniform")


@dataclass(frozen=True)
class SamplingOptions:
    clip_len: int = 16  # frames per item (T)
    mode: str = "consecutive"  # consecutive | random_stride | uniform (T frames spread over the clip)
    stride: int = 1  # consecutive: step between frames; random_stride: the largest step drawn
    stream_overlap: float = 0.0  # streams: fraction by which consecutive windows overlap

    def __post_init__(self) -> None:
        if self.mode not in SAMPLING_MODES:
            raise ConfigError(f"sampling mode must be one of {', '.join(SAMPLING_MODES)}; got {self.mode!r}")
        if self.clip_len < 1 or self.stride < 1 or not 0 <= self.stream_overlap < 1:
            raise ConfigError("clip length and stride must be >= 1 and stream overlap in [0, 1)")


def clip_indices(n: int, options: SamplingOptions, rng: np.random.Generator | None) -> np.ndarray:
    """T frame indices into a clip of n frames; -1 pads a clip too short for T. ``rng=None``: deterministic."""
    t = options.clip_len
    if options.mode == "uniform":
        edges = np.linspace(0, n, t + 1)
        if rng is None:
            idx = ((edges[:-1] + edges[1:]) / 2).astype(np.int64)
        else:
            idx = np.floor(edges[:-1] + rng.uniform(size=t) * np.diff(edges)).astype(np.int64)
        return np.minimum(idx, n - 1)
    stride = options.stride
    if options.mode == "random_stride" and rng is not None:
        stride = int(rng.integers(1, options.stride + 1))
    stride = max(1, min(stride, (n - 1) // max(t - 1, 1) or 1))
    span = (t - 1) * stride + 1
    if n < span:
        idx = np.arange(t, dtype=np.int64)
        idx[idx >= n] = -1
        return idx
    start = int(rng.integers(0, n - span + 1)) if rng is not None else 0
    return start + np.arange(t, dtype=np.int64) * stride


class FrameStore:
    """Decoded frames (and per-frame labels) of each sample at one size, from memory or from disk."""

    def __init__(self, index: DataIndex, size: int) -> None:
        self.index = index
        self.size = size
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample i -> frames (N, size, size, 3) uint8 and labels (N,) int64."""
        if i in self._cache:
            return self._cache[i]
        sample = self.index.samples[i]
        frames, _ = read_video(sample.path, self.size)
        return frames, self._labels(sample, len(frames))

    def _labels(self, sample: Sample, n: int) -> np.ndarray:
        if not sample.is_stream:
            return np.full(n, sample.label, dtype=np.int64)
        labels = read_frame_labels(sample.frame_labels, self.index.classes)[:n]
        if len(labels) < n:
            labels = np.concatenate([labels, np.full(n - len(labels), -1, dtype=np.int64)])
        return labels

    def preload(self, which: Sequence[int] | None = None, threads: int = 2) -> None:
        """Decode the given samples (default: all) into memory; OpenCV decodes in parallel threads."""
        which = range(len(self.index.samples)) if which is None else which
        todo = [i for i in which if i not in self._cache]
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for i, item in zip(todo, pool.map(self.load, todo), strict=True):
                self._cache[i] = item
        nbytes = sum(f.nbytes for f, _ in self._cache.values())
        log.info("holding %d videos in memory (%.0f MB at %d px)", len(self._cache), nbytes / 2**20, self.size)

    def length(self, i: int) -> int:
        if i in self._cache:
            return len(self._cache[i][0])
        return count_frames(self.index.samples[i].path)


class ClipDataset(Dataset):
    """Items of T frames: one per clip, and the windows of each stream (see the module notes)."""

    def __init__(
        self,
        index: DataIndex,
        sampling: SamplingOptions,
        input_size: int,
        *,
        augment: ClipAugment | None = None,
        train: bool = False,
        cache: bool = False,
        seed: int = 0,
        threads: int = 2,
        store: FrameStore | None = None,
    ) -> None:
        """``store`` replaces the decoded frames, e.g. with a FeatureStore's per-frame features."""
        self.index = index
        self.sampling = sampling
        self.input_size = input_size
        self.augment = augment
        self.train = train
        self.seed = seed
        self.epoch = 0  # set by the training loop: each epoch draws new crops, offsets and flips
        decode_size = round(input_size * 1.25) if augment is not None else input_size
        self.store = store or FrameStore(index, decode_size)
        streams = [i for i, s in enumerate(index.samples) if s.is_stream]
        self.store.preload(range(len(index.samples)) if cache else streams, threads)
        self.items: list[tuple[int, int]] = []  # (sample, window start; -1 for a whole clip)
        hop = max(1, round(sampling.clip_len * (1 - sampling.stream_overlap)))
        for i, sample in enumerate(index.samples):
            if sample.is_stream:
                n = self.store.length(i)
                self.items += [(i, start) for start in range(0, max(1, n - sampling.clip_len + 1), hop)]
            else:
                self.items.append((i, -1))
        if not self.items:
            raise DataError(f"{index.root}: the data set has no clips or stream windows")

    def __len__(self) -> int:
        return len(self.items)

    def item_labels(self) -> np.ndarray:
        """The label of each clip item (-1 for stream windows), for class-balanced sampling."""
        return np.array([self.index.samples[i].label for i, _ in self.items])

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        i, start = self.items[k]
        rng = np.random.default_rng([self.seed, self.epoch, k]) if self.train else None
        frames, labels = self.store.load(i)
        t = self.sampling.clip_len
        if start >= 0:  # a stream window; training shifts it by up to one hop
            if rng is not None:
                start = min(len(frames) - t, start + int(rng.integers(0, t)))
            idx = np.arange(max(start, 0), max(start, 0) + t)
            idx[idx >= len(frames)] = -1
        else:
            idx = clip_indices(len(frames), self.sampling, rng)
        clip = frames[np.maximum(idx, 0)]  # (T, S', S', 3)
        clip_labels = np.where(idx >= 0, labels[np.maximum(idx, 0)], -1)  # (T,)
        if self.augment is not None:
            clip, clip_labels = self.augment(clip, clip_labels, rng or np.random.default_rng(k), self.input_size)
        return torch.from_numpy(np.ascontiguousarray(clip)), torch.from_numpy(clip_labels)
