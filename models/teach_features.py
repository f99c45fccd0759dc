"""What ``dcrn teach`` learns from, per clip, computed once and cached on disk keyed by the clip's content.

- **Flow features** (:class:`FeatureCache`): the whole picture's grid optical flow at 96 px, exactly as the
  streaming step of a taught model computes it (:func:`frame_features`, :func:`flow_step`).
- **Keypoints** (:class:`KeypointCache`): the hands and body a :class:`KeypointReader` finds in every frame
  (the engine's encoders: this package cannot run them itself, the caller passes one in). Landmarks, not
  feature vectors, are cached, so a change of the feature math does not rerun the encoders; the key holds
  the reader's recipe (its graphs' hashes and settings).

Both caches are keyed by :func:`~dcrn.models.video_io.media_digest` (a SHA-1 of the file), so a copied or
moved data folder keeps them, and written atomically, so an interrupted teach leaves no half file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from . import flow_cell
from .dcrn import DCRN
from .errors import DataError, DcrnError
from .files import atomic_file
from .frame_vector import FLOW_SIZE, ClipKeypoints
from .video_io import count_frames, media_digest, read_video

log = logging.getLogger(__name__)

FEATURE_RECIPE = 2  # bump when the flow features change, so stale caches are not reused
KEYPOINT_RECIPE = 1  # bump when the cached keypoint arrays change


class TeachCancelled(DcrnError):
    """Training was cancelled by the caller (``TeachOptions.cancel``)."""


class KeypointReader(Protocol):
    """Finds the hands and body in every frame of a clip, from a fresh tracking state."""

    recipe: str  # what decides the landmarks (graphs' hashes, thresholds): part of the cache key

    def __call__(self, path: Path) -> ClipKeypoints: ...


class FeatureCache:
    """Per-frame flow features of each clip, on disk as ``.npy`` keyed by the clip's content and the feature recipe."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def key(self, path: Path) -> Path:
        ident = json.dumps([media_digest(path), FEATURE_RECIPE, FLOW_SIZE, flow_cell.GRID, flow_cell.SCALES])
        return self.folder / (hashlib.sha1(ident.encode()).hexdigest()[:20] + ".npy")

    def features(self, model: DCRN, paths: Sequence[Path], progress=None, cancel=None) -> list[np.ndarray]:
        out, computed = [], 0
        for k, path in enumerate(paths):
            check_cancel(cancel)
            cached = self.key(Path(path))
            if cached.is_file():
                out.append(np.load(cached))
            else:
                out.append(clip_features(model, Path(path)))
                computed += 1
                with atomic_file(cached) as tmp, open(tmp, "wb") as handle:
                    np.save(handle, out[-1])
            report(progress, "features", k + 1, len(paths))
        log.info("features of %d clips ready (%d computed now, the rest from %s)", len(paths), computed, self.folder)
        return out


class KeypointCache:
    """Per-clip keypoints (:class:`~dcrn.models.frame_vector.ClipKeypoints`) as ``.npz``, keyed by the clip's
    content and the reader's recipe. A cached file that cannot be read is computed again."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def key(self, path: Path, recipe: str) -> Path:
        ident = json.dumps([media_digest(path), KEYPOINT_RECIPE, recipe])
        return self.folder / (hashlib.sha1(ident.encode()).hexdigest()[:20] + ".npz")

    def clip(self, reader: KeypointReader, path: Path) -> ClipKeypoints:
        cached = self.cached(reader, Path(path))
        return cached if cached is not None else self._store(reader, Path(path), reader(Path(path)))

    def cached(self, reader: KeypointReader, path: Path) -> ClipKeypoints | None:
        """The clip's keypoints from the cache, or None when they are not there (or cannot be read)."""
        cached = self.key(Path(path), reader.recipe)
        if cached.is_file():
            try:
                with np.load(cached, allow_pickle=False) as arrays:
                    return ClipKeypoints.from_arrays(arrays)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("%s: unreadable cached keypoints (%s); reading the clip again", cached.name, exc)
        return None

    def _store(self, reader: KeypointReader, path: Path, clip: ClipKeypoints) -> ClipKeypoints:
        with atomic_file(self.key(path, reader.recipe)) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **clip.to_arrays())
        return clip

    def clips(
        self,
        reader: KeypointReader,
        paths: Sequence[Path],
        progress=None,
        cancel=None,
        workers: int = 1,
        processes: bool | None = None,
    ) -> list[ClipKeypoints]:
        """Every clip's keypoints; those not cached are read ``workers`` clips at a time: in a process each
        when the reader is ``process_safe`` (the engine's is) and ``processes`` says so (None: when there are
        at least ``PROCESS_MIN_FRAMES`` frames to read, since a process takes seconds to start), else in
        threads. Processes read 12 GMDCSA24 clips in 32 s where threads took 35 s (docs/TEACH.md): decoding
        and the encoders' Python between graph calls hold the interpreter's lock."""
        paths = [Path(p) for p in paths]
        out: list[ClipKeypoints | None] = [self.cached(reader, p) for p in paths]
        if processes is None:
            processes = _frames_at_least([p for p, clip in zip(paths, out, strict=True) if clip is None])
        try:
            self._read(reader, paths, out, workers, progress, cancel, processes=processes)
        except BrokenProcessPool as exc:  # e.g. a script that starts teach without a __main__ guard
            log.warning("keypoint reading processes stopped (%s); reading the other clips in threads", exc)
            self._read(reader, paths, out, workers, progress, cancel, processes=False)
        return out

    def _read(self, reader, paths: list[Path], out: list, workers: int, progress, cancel, processes: bool) -> None:
        """Read (and cache) the clips whose ``out`` entry is None, in place."""
        todo = [k for k, clip in enumerate(out) if clip is None]
        report(progress, "keypoints", len(paths) - len(todo), len(paths))
        if not todo:
            return
        pool, read = _reading_pool(reader, min(max(1, workers), len(todo)), processes)
        with _interrupts_ignored():  # processes start as work is submitted: they must not take Ctrl-C
            pending = {pool.submit(read, paths[k]): k for k in todo}
        stopped = False
        try:
            for done, future in enumerate(as_completed(pending), start=len(paths) - len(todo) + 1):
                k = pending[future]
                out[k] = self._store(reader, paths[k], future.result())
                report(progress, "keypoints", done, len(paths))
                check_cancel(cancel)
        except BaseException:  # cancelled, a clip failed, or interrupted: stop reading at once
            stopped = True
            _stop(pool)
            raise
        finally:
            pool.shutdown(wait=not stopped, cancel_futures=True)


_process_reader: KeypointReader | None = None
PROCESS_MIN_FRAMES = 3000  # frames to read below which threads read them (about 100 s of one core here)


def _frames_at_least(paths: Sequence[Path], frames: int = PROCESS_MIN_FRAMES) -> bool:
    """Whether the clips hold at least ``frames`` frames (by their containers' counts)."""
    total = 0
    for path in paths:
        try:
            total += count_frames(path)
        except DataError:
            continue  # its reader says what is wrong with it
        if total >= frames:
            return True
    return False


def _reading_pool(
    reader: KeypointReader, workers: int, processes: bool
) -> tuple[Executor, Callable[[Path], ClipKeypoints]]:
    """An executor for ``workers`` clips at a time and the function it runs on a clip's path."""
    if processes and workers > 1 and getattr(reader, "process_safe", False):
        context = multiprocessing.get_context("spawn")  # a fork would copy the parent's runtime threads
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_reader, initargs=(reader,))
        return pool, _read_in_process
    return ThreadPoolExecutor(workers, thread_name_prefix="dcrn-keypoints"), reader


@contextmanager
def _interrupts_ignored():
    """Ctrl-C ignored while reading processes are started (from the main thread; elsewhere there is no Ctrl-C
    to take), so that they start ignoring it and leave it to the parent, which stops them itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _start_reader(reader: KeypointReader) -> None:
    """In a reading process: the reader (rebuilt from its pickle), one thread per process, and an end with
    the parent however it ends (killed, the pool's workers would wait for work forever)."""
    global _process_reader
    torch.set_num_threads(1)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_after, args=(parent,), name="dcrn-parent-watch", daemon=True).start()
    _process_reader = reader


def _exit_after(parent) -> None:
    parent.join()
    os._exit(1)


def _read_in_process(path: Path) -> ClipKeypoints:
    assert _process_reader is not None, "the reading process was not started with a reader"
    return _process_reader(path)


def _stop(pool: Executor) -> None:
    """Stop ``pool``'s reading processes now rather than after the clips they are on (a long clip takes
    minutes); ``ProcessPoolExecutor`` has no public way to do it before Python 3.14. Threads finish their clip."""
    processes = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        process.terminate()


def clip_features(model: DCRN, path: Path) -> np.ndarray:
    """A clip's per-frame flow features (T, F), exactly as the streaming step computes them."""
    frames, _ = read_video(path, FLOW_SIZE)  # (T, S, S, 3)
    if len(frames) == 0:
        raise DataError(f"{path}: no frames could be decoded")
    return frame_features(model, frames)


@torch.no_grad()
def frame_features(model: DCRN, frames: np.ndarray, batch: int = 64) -> np.ndarray:
    """Consecutive frames (T, S, S, 3) uint8 RGB of one stream, from a fresh state -> flow features (T, F).
    ``model`` is a ``luma`` + ``flow_memory`` DCRN (its encoder and the cell's per-frame flow are used)."""
    mean = torch.tensor(model.config.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.config.std).view(1, 3, 1, 1)
    out = []
    prev = None
    for start in range(0, len(frames), batch):
        x = torch.from_numpy(frames[start : start + batch]).permute(0, 3, 1, 2).float() / 255  # (b, 3, S, S)
        maps = model.encode((x - mean) / std)  # (b, C, H, W)
        before = torch.cat([maps[:1] * 0 if prev is None else prev, maps[:-1]])
        seen = torch.ones(len(maps), 1)
        if prev is None:
            seen[0] = 0  # a stream's first frame has no change
        out.append(model.cell.frame_features(maps, before, seen))
        prev = maps[-1:]
    return torch.cat(out).numpy()


@torch.no_grad()
def flow_step(model: DCRN, frame: np.ndarray, prev: torch.Tensor | None) -> tuple[np.ndarray, torch.Tensor]:
    """One frame (S, S, 3) uint8 RGB and the previous frame's map (None: a fresh stream) -> its flow features
    (F,) and its map: :func:`frame_features` one frame at a time (the same numbers, tested)."""
    mean = torch.tensor(model.config.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.config.std).view(1, 3, 1, 1)
    x = torch.from_numpy(np.ascontiguousarray(frame)[None]).permute(0, 3, 1, 2).float() / 255
    current = model.encode((x - mean) / std)  # (1, C, H, W)
    seen = torch.ones(1, 1) if prev is not None else torch.zeros(1, 1)
    before = prev if prev is not None else current * 0
    return model.cell.frame_features(current, before, seen)[0].numpy(), current


def report(progress: Callable[[str, int, int], None] | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


def check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise TeachCancelled("teaching was cancelled")
