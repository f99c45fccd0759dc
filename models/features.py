"""Per-frame features of a frozen encoder, computed once per video and cached (the fast CPU mode).

With the encoder frozen, ``model.encode(frame)`` never changes during training, so every frame's feature
vector is computed once (no augmentation), kept in memory and, with ``cache_dir``, on disk keyed by the
video's content and the encoder's configuration. Training then runs only the recurrent cell and the head over
windows of features, which is orders of magnitude cheaper than running the CNN on every step.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from .data import DataIndex
from .dcrn import DCRN
from .files import atomic_file
from .video_io import media_digest, read_video

log = logging.getLogger(__name__)


class FeatureStore:
    """Same interface as :class:`~dcrn.models.datasets.FrameStore`, holding (N, F) float32 features."""

    def __init__(
        self,
        index: DataIndex,
        model: DCRN,
        *,
        cache_dir: Path | None = None,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
    ) -> None:
        from .datasets import FrameStore  # labels are read exactly as for frames

        self.index = index
        self._labels_from = FrameStore(index, model.config.input_size)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        config = model.config
        key = json.dumps(
            {
                k: getattr(config, k)
                for k in ("encoder", "encoder_widths", "encoder_padding", "encoder_norm", "pretrained", "pool")
            }
            | {"input_size": config.input_size, "mean": config.mean, "std": config.std},
            sort_keys=True,
        )
        weights = hashlib.sha1()
        for tensor in model.encoder.state_dict().values():
            weights.update(tensor.detach().cpu().numpy().tobytes())
        self._key = hashlib.sha1((key + weights.hexdigest()).encode()).hexdigest()[:16]
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._encode_all(model, batch_size, torch.device(device))

    def _encode_all(self, model: DCRN, batch_size: int, device: torch.device) -> None:
        config = model.config
        mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(config.std, device=device).view(1, 3, 1, 1)
        was_training = model.training
        model.eval()
        computed = 0
        for i, sample in enumerate(self.index.samples):
            cached = self._disk_path(sample.path)
            if cached is not None and cached.is_file():
                features = np.load(cached)
            else:
                frames, _ = read_video(sample.path, config.input_size)  # (N, S, S, 3)
                chunks = []
                with torch.no_grad():
                    for start in range(0, len(frames), batch_size):
                        x = torch.from_numpy(frames[start : start + batch_size]).to(device)
                        x = (x.permute(0, 3, 1, 2).float() / 255 - mean) / std  # (b, 3, S, S)
                        chunks.append(model.encode(x).float().cpu().numpy())  # (b, F)
                features = np.concatenate(chunks)
                computed += len(features)
                if cached is not None:
                    with atomic_file(cached) as tmp, open(tmp, "wb") as handle:
                        np.save(handle, features)
            self._cache[i] = (features, self._labels_from._labels(sample, len(features)))
        model.train(was_training)
        total = sum(len(f) for f, _ in self._cache.values())
        log.info("features of %d frames ready (%d computed now, the rest from %s)", total, computed, self.cache_dir)

    def _disk_path(self, video: Path) -> Path | None:
        if self.cache_dir is None:
            return None
        ident = f"{media_digest(video)}|{self._key}"  # the content, wherever it lies and whenever copied
        return self.cache_dir / self._key / (hashlib.sha1(ident.encode()).hexdigest()[:20] + ".npy")

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self._cache[i]

    def length(self, i: int) -> int:
        return len(self._cache[i][0])

    def preload(self, which=None, threads: int = 2) -> None:
        """Everything is in memory from the start."""
