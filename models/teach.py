"""Teach a model the user's own actions from a few recorded clips: ``dcrn teach --data DATASET --out my.pt``.

The model is a DCRN whose encoder and recurrent cell have no learned weights, so all that is learned is the
linear head, fitted in seconds. What it sees per frame is one of (``CANDIDATES``): the whole picture's
optical flow on a grid (``luma`` + ``flow_memory``, :mod:`dcrn.models.flow_cell`), the hands, the body, or
a combination (``features`` + ``feature_memory``: keypoints found by the engine's encoders, turned into
vectors that hold across people and places by :mod:`dcrn.models.frame_vector`), always carried through the
same fixed multi-timescale memory (:mod:`dcrn.models.memory_cell`).

1. **Features once.** Every clip is decoded and its per-frame flow features (and, given a
   ``KeypointReader``, its hands' and body's landmarks) computed once, then cached on disk keyed by the
   clip's content (a SHA-1 of the file) and the recipe (:mod:`dcrn.models.teach_features`): adding clips
   computes only the new ones, and a copied or moved data folder keeps its cache.
2. **What to see, from the data.** Every candidate is cross-validated (below); the cheapest one within one
   standard error of the best score is kept (:func:`choose_candidate`), so where the picture's motion
   already separates the labels, flow stays.
   A keypoint kind found in fewer than ``MIN_FOUND`` of the frames (no hands in view) is not tried. Each
   candidate's score is reported. The head is an L2-regularised softmax regression on the standardised memory
   of every frame after a short warm-up. Its regularisation strength is chosen by cross-validation among a
   few values: by recording session when every label was recorded in two sessions or more (clips of one
   session share a background, light and person, so a clip-level split would flatter), otherwise by clip.
   The chosen strength's cross-validated accuracy and confusion matrix are reported; a clip is scored by
   its last frame's prediction, as ``dcrn eval`` does. The estimate is *clearly above chance* when the
   lower end of its 95% Wilson interval over the held-out clips exceeds the majority-label rate
   (:func:`above_chance`); otherwise the report carries a warning and what to do about it.
3. **Fit on everything** and save an ordinary checkpoint: ``dcrn run``, ``dcrn eval``, ``dcrn export``
   and the GUI treat it like any other model.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import flow_cell
from .checkpoint import save_checkpoint
from .config import DCRNConfig
from .data import DataIndex, Sample, scan, scan_splits
from .dcrn import DCRN
from .errors import DataError
from .frame_vector import FLOW_SIZE, clip_vectors
from .teach_features import (
    FEATURE_RECIPE,
    FeatureCache,
    KeypointCache,
    KeypointReader,
    TeachCancelled,
    clip_features,
    frame_features,
)
from .teach_features import check_cancel as _check
from .teach_features import report as _report
from .teach_fit import (
    DEFAULT_L2,
    L2_CHOICES,
    above_chance,
    chance_rate,
    choose_l2,
    cv_folds,
    fit_model,
    wilson_lower,
)

__all__ = [  # the flow cache and features are teach's since its first version; they live in teach_features
    "FEATURE_RECIPE",
    "FeatureCache",
    "TeachCancelled",
    "TeachOptions",
    "TeachReport",
    "clip_features",
    "frame_features",
    "teach",
]

log = logging.getLogger(__name__)

INPUT_SIZE = FLOW_SIZE  # frames are resized to 96 x 96 before the flow is measured
MIN_FOUND = 0.1  # a keypoint kind found in fewer frames than this (hands, body) is not tried
# What teach tries, in order of cost: on a tie of cross-validated accuracy the cheaper one is kept.
CANDIDATES = (
    ("flow",),
    ("body",),
    ("hands",),
    ("hands", "body"),
    ("flow", "body"),
    ("flow", "hands"),
    ("flow", "hands", "body"),
)


@dataclass
class TeachOptions:
    data: Path  # a folder of class folders (a `dcrn record` data set or any `dcrn train` folder)
    out: Path  # the checkpoint to write
    cache_dir: Path | None = None  # per-clip features; default DATA/.cache/features
    progress: Callable[[str, int, int], None] | None = None  # (stage, done, total)
    cancel: threading.Event | None = None
    min_clips: int = 2  # per label; 1 trains without a cross-validated estimate
    l2: float | None = None  # fixed regularisation (skips its selection)
    keypoints: KeypointReader | None = None  # finds hands and bodies: with it, keypoint models are tried too
    kinds: tuple[tuple[str, ...], ...] | None = None  # which candidates to try (default: CANDIDATES available)
    workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))  # clips read for keypoints at once


@dataclass
class TeachReport:
    out: Path
    labels: tuple[str, ...]
    clips_per_label: dict[str, int]
    recipe: str
    cv_accuracy: float | None
    cv_worst_fold: float | None
    cv_split: str  # "session", "clip" or "none"
    confusion: list[list[int]] = field(default_factory=list)
    seconds: float = 0.0
    cv_folds: list[float] = field(default_factory=list)
    candidates: dict[str, dict] = field(default_factory=dict)  # what was tried: "flow+body" -> accuracy, worst fold
    kept: str = "flow"  # the candidate the model was fitted with
    found: dict[str, float] = field(default_factory=dict)  # share of frames with a hand / a body found
    chance: float | None = None  # the majority-label rate: what always guessing the biggest label scores
    cv_lower: float | None = None  # lower end of the 95% Wilson interval of cv_accuracy over the clips
    above_chance: bool | None = None  # cv_lower > chance; None when not estimated

    def warning(self) -> str:
        """What to tell the user when the model is not clearly better than guessing ("" when it is)."""
        if self.above_chance is not False:
            return ""
        n = sum(self.clips_per_label.values())
        return (
            f"this model is not clearly better than chance: cross-validated accuracy {self.cv_accuracy:.2f} "
            f"over {n} clips (95% lower bound {self.cv_lower:.2f}) does not exceed chance {self.chance:.2f} "
            f"(always guessing the biggest label).\n"
            "It may predict no better than a guess. To fix it: record more clips of each label (5-10), make them "
            "more varied (other people, places, light, distances), or choose labels that differ in how things "
            "move (it cannot tell poses held still apart)."
        )

    def summary(self) -> str:
        lines = [
            f"taught {len(self.labels)} labels from {sum(self.clips_per_label.values())} clips in "
            f"{self.seconds:.1f} s -> {self.out}",
            f"recipe: {self.recipe}",
        ]
        if self.cv_accuracy is None:
            lines.append("accuracy: not estimated (record at least 2 clips per label to cross-validate)")
        else:
            lines.append(
                f"cross-validated accuracy (by {self.cv_split}, {len(self.cv_folds)} folds): "
                f"{self.cv_accuracy:.2f}, worst fold {self.cv_worst_fold:.2f}"
            )
            width = max(len(name) for name in self.labels)
            lines.append("confusion (rows: true, columns: predicted):")
            lines.append(" " * (width + 2) + " ".join(f"{i:>3}" for i in range(len(self.labels))))
            for i, (name, row) in enumerate(zip(self.labels, self.confusion, strict=True)):
                lines.append(f"{i:>2} {name:<{width}} " + " ".join(f"{v:>3}" for v in row))
            verdict = "yes" if self.above_chance else "NO"
            lines.append(f"above chance ({self.chance:.2f}): {verdict}, 95% lower bound {self.cv_lower:.2f}")
        if len(self.candidates) > 1 or self.found:
            lines.append(f"kept: {self.kept}; tried (cross-validated accuracy, worst fold):")
            for name, score in self.candidates.items():
                accuracy, worst = score["cv_accuracy"], score["cv_worst_fold"]
                shown = "not estimated" if accuracy is None else f"{accuracy:.2f}, worst fold {worst:.2f}"
                lines.append(f"  {name:<16} {shown}")
            if self.found:
                seen = ", ".join(f"{kind} in {share:.0%}" for kind, share in self.found.items())
                lines.append(f"found in the clips' frames: {seen}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "labels": list(self.labels),
            "clips_per_label": self.clips_per_label,
            "recipe": self.recipe,
            "cv_accuracy": self.cv_accuracy,
            "cv_worst_fold": self.cv_worst_fold,
            "cv_folds": self.cv_folds,
            "cv_split": self.cv_split,
            "confusion": self.confusion,
            "seconds": round(self.seconds, 2),
            "chance": self.chance,
            "cv_lower_bound": self.cv_lower,
            "above_chance": self.above_chance,
            "kept": self.kept,
            "candidates": self.candidates,
            "found": self.found,
            "warning": self.warning() or None,
        }


def teach_config(labels: Sequence[str]) -> DCRNConfig:
    """The taught model's architecture: brightness -> grid optical flow -> fixed memory -> linear head."""
    return DCRNConfig(
        num_classes=len(labels),
        labels=tuple(labels),
        encoder="luma",
        cell="flow_memory",
        input_size=INPUT_SIZE,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )


def features_config(labels: Sequence[str], kinds: Sequence[str]) -> DCRNConfig:
    """A taught keypoint model: per-frame vectors (``kinds`` of flow, hands, body) -> fixed memory -> head."""
    if tuple(kinds) == ("flow",):
        return teach_config(labels)
    return DCRNConfig(
        num_classes=len(labels),
        labels=tuple(labels),
        encoder="features",
        cell="feature_memory",
        features=tuple(kinds),
        input_size=INPUT_SIZE,  # the flow part's frame size
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )


@dataclass
class _Tried:
    kinds: tuple[str, ...]
    model: DCRN
    memories: list[np.ndarray]
    l2: float
    pred: np.ndarray | None = None
    per_fold: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "+".join(self.kinds)

    def accuracy(self, labels: np.ndarray) -> float | None:
        return None if self.pred is None else float(np.mean(self.pred == labels))


def teach(options: TeachOptions) -> TeachReport:
    started = time.monotonic()
    index = _dataset_index(Path(options.data), options.min_clips)
    paths = [s.path for s in index.samples]
    cache_root = options.cache_dir or Path(options.data) / ".cache" / "features"
    flow_model = DCRN(teach_config(index.classes)).eval()
    flow = FeatureCache(cache_root).features(flow_model, paths, options.progress, options.cancel)
    inputs, found = {"flow": flow}, {}
    if options.keypoints is not None:
        clips = KeypointCache(Path(cache_root) / "keypoints").clips(
            options.keypoints, paths, options.progress, options.cancel, workers=options.workers
        )
        frames = [clip.frames() for clip in clips]
        total = max(sum(len(f) for f in frames), 1)
        for kind in ("hands", "body"):
            found[kind] = round(sum(c.found()[kind] * len(c.body) for c in clips) / total, 4)
            inputs[kind] = [clip_vectors(f, (kind,)) for f in frames]
    labels = np.array([s.label for s in index.samples])
    folds, split = cv_folds(index.samples, labels)
    wanted = options.kinds or CANDIDATES
    candidates = [k for k in wanted if all(kind in inputs and found.get(kind, 1.0) >= MIN_FOUND for kind in k)]
    if not candidates:
        raise DataError(f"none of {['+'.join(k) for k in wanted]} can be taught from these clips: {found}")
    tried = [_candidate(kinds, index.classes, inputs) for kinds in candidates]
    l2_choices = (options.l2,) if options.l2 is not None else L2_CHOICES
    if folds:  # the candidates side by side, one per core (torch's fits release the GIL)
        _cross_validate_all(tried, labels, folds, len(index.classes), l2_choices, options)
    best = choose_candidate(tried, labels)
    model, accuracy, l2, per_fold = best.model, best.accuracy(labels), best.l2, best.per_fold
    confusion = np.zeros((len(index.classes),) * 2 if folds else (0, 0), dtype=int)
    if folds:
        np.add.at(confusion, (labels, best.pred), 1)

    _check(options.cancel)
    _report(options.progress, "training", 0, 1)
    fit_model(model, best.memories, labels, l2)
    _report(options.progress, "training", 1, 1)
    report = TeachReport(
        out=Path(options.out),
        labels=index.classes,
        clips_per_label={name: int(np.sum(labels == i)) for i, name in enumerate(index.classes)},
        recipe=_recipe(best.kinds, l2),
        cv_accuracy=None if accuracy is None else round(accuracy, 4),
        cv_worst_fold=round(min(per_fold), 4) if per_fold else None,
        cv_split=split,
        confusion=confusion.tolist(),
        cv_folds=[round(v, 4) for v in per_fold],
        candidates={
            t.name: {
                "cv_accuracy": None if t.pred is None else round(t.accuracy(labels), 4),
                "cv_worst_fold": round(min(t.per_fold), 4) if t.per_fold else None,
                "l2": t.l2,
            }
            for t in tried
        },
        kept=best.name,
        found=found,
    )
    if accuracy is not None:
        correct, counts = int(np.sum(best.pred == labels)), list(report.clips_per_label.values())
        report.chance = round(chance_rate(counts), 4)
        report.cv_lower = round(wilson_lower(correct, len(labels)), 4)
        report.above_chance = above_chance(correct, len(labels), counts)
    report.seconds = time.monotonic() - started
    save_checkpoint(options.out, model, meta={"taught": report.to_dict(), "data": str(options.data)})
    log.info("saved %s", options.out)
    return report


def choose_candidate(tried: list[_Tried], labels: np.ndarray) -> _Tried:
    """The cheapest candidate (they come cheapest first) whose cross-validated accuracy is within one standard
    error of the best one's (Breiman's one-standard-error rule): a costlier kind must beat a cheaper one by
    more than the estimate's own noise, so where flow already separates the labels, flow is kept."""
    scores = [t.accuracy(labels) or 0.0 for t in tried]
    top = max(scores)
    margin = float(np.sqrt(top * (1 - top) / max(len(labels), 1)))
    return next(t for t, score in zip(tried, scores, strict=True) if score >= top - margin - 1e-9)


def _cross_validate_all(tried: list[_Tried], labels, folds, num_classes: int, l2_choices, options) -> None:
    per_fit = options.progress if len(tried) == 1 else None  # one candidate: progress per fit, else per candidate

    def run(t: _Tried) -> None:
        t.l2, t.pred, t.per_fold = choose_l2(
            t.memories, labels, folds, num_classes, l2_choices, per_fit, options.cancel
        )

    with ThreadPoolExecutor(max(1, options.workers), thread_name_prefix="dcrn-teach") as pool:
        futures = [pool.submit(run, t) for t in tried]
        for done, future in enumerate(as_completed(futures), start=1):
            future.result()
            if per_fit is None:
                _report(options.progress, "cross-validation", done, len(tried))


def _candidate(kinds: tuple[str, ...], labels: Sequence[str], inputs: dict[str, list[np.ndarray]]) -> _Tried:
    """The model of one candidate and every clip's memory trajectory under it."""
    model = DCRN(features_config(labels, kinds)).eval()
    memories = []
    for parts in zip(*(inputs[k] for k in kinds), strict=True):
        steps = min(len(p) for p in parts)  # flow and keypoints of one clip: the same decoded frames
        u = np.concatenate([p[:steps] for p in parts], axis=1).astype(np.float32)
        memories.append(model.cell.memory_trajectory(torch.from_numpy(u)).numpy())
    return _Tried(kinds, model, memories, DEFAULT_L2)


def _recipe(kinds: tuple[str, ...], l2: float) -> str:
    memory = f"{len(flow_cell.RATES)}x{flow_cell.STAGES} memory"
    if kinds == ("flow",):
        return f"luma + flow_memory (grid optical flow, {memory}) + linear head, L2 {l2:g}"
    return f"features {'+'.join(kinds)} ({memory}) + linear head, L2 {l2:g}"


def _dataset_index(root: Path, min_clips: int) -> DataIndex:
    """The clips to learn from: the folder's class folders, or those of ``train/`` and ``val/`` inside it
    (a ``test/`` folder is left alone for ``dcrn eval``); labelled streams are for ``dcrn eval`` too."""
    if (root / "train").is_dir():
        train, val = scan_splits(root)
        held = val.samples if val is not None and val.root.name == "val" else ()
        index = train.subset(train.samples + held)
    else:
        index = scan(root)
    index = index.subset(index.clips)
    counts = {name: sum(s.label == i for s in index.samples) for i, name in enumerate(index.classes)}
    used = [name for name, n in counts.items() if n > 0]
    if len(used) < 2:
        raise DataError(f"{root}: teaching needs clips of at least 2 labels; clips per label: {counts}")
    few = [f"{name} ({n})" for name, n in counts.items() if 0 < n < min_clips]
    if few:
        raise DataError(f"{root}: record at least {min_clips} clips of each label; too few: {', '.join(few)}")
    if len(used) < len(index.classes):  # labels without clips cannot be learned: leave them out
        keep = [name for name in index.classes if counts[name] > 0]
        index = _only_labels(index, keep)
    return index


def _only_labels(index: DataIndex, keep: list[str]) -> DataIndex:
    remap = {index.classes.index(name): i for i, name in enumerate(keep)}
    samples = tuple(Sample(s.path, remap[s.label], None, s.group) for s in index.samples if s.label in remap)
    return DataIndex(index.root, tuple(keep), samples)
