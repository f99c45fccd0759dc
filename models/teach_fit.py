"""The head ``dcrn teach`` fits and how it is scored: an L2-regularised softmax regression on the standardised
memory of every frame after a warm-up, its strength chosen by cross-validation (by recording session when the
clips say which, else by clip), a clip scored by its last frame, and whether the estimate is clearly above
chance (the Wilson interval's lower end against the majority label's rate)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .data import Sample
from .dcrn import DCRN
from .teach_features import check_cancel as _check
from .teach_features import report as _report

L2_CHOICES = (0.1, 1.0, 10.0)  # regularisation strengths tried by cross-validation (on standardised units)
DEFAULT_L2 = 1.0  # when there are too few clips to cross-validate
WARMUP_FRAMES = 8  # frames at a clip's start left out of the fit: the memory has seen too little yet
MAX_FOLDS = 5
CHANCE_Z = 1.96  # the Wilson interval's z: 95% two-sided, a margin for picking the best of L2_CHOICES


def chance_rate(clips_per_label: Sequence[int]) -> float:
    """What a model that always guesses the biggest label scores: 1 / labels when they are balanced."""
    return max(clips_per_label) / sum(clips_per_label)


def wilson_lower(correct: int, total: int, z: float = CHANCE_Z) -> float:
    """Lower end of the Wilson score interval of a proportion ``correct / total`` (0 when total is 0)."""
    if total <= 0:
        return 0.0
    p = correct / total
    centre = p + z * z / (2 * total)
    spread = z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return float(max(0.0, (centre - spread) / (1 + z * z / total)))


def above_chance(correct: int, total: int, clips_per_label: Sequence[int], z: float = CHANCE_Z) -> bool:
    """Clearly better than guessing: the held-out accuracy's Wilson lower bound exceeds the majority rate."""
    return wilson_lower(correct, total, z) > chance_rate(clips_per_label)


def cv_folds(samples: Sequence[Sample], labels: np.ndarray) -> tuple[list[np.ndarray], str]:
    """Held-out index sets: by recording session (group) when every label has 2+ sessions, else by clip."""
    groups = np.array([s.group for s in samples])
    classes = np.unique(labels)
    sessions_per_label = [len(set(groups[labels == c])) for c in classes]
    one_clip_sessions = len(set(groups)) == len(groups)  # no session information: every clip is its own group
    if not one_clip_sessions and min(sessions_per_label) >= 2 and len(set(groups)) >= 3:
        unique = sorted(set(groups))
        order = np.random.default_rng(0).permutation(len(unique))
        folds_n = min(MAX_FOLDS, len(unique))
        held = [{unique[i] for i in order[f::folds_n]} for f in range(folds_n)]
        folds = [np.flatnonzero([g in h for g in groups]) for h in held]
        return [f for f in folds if len(f)], "session"
    per_label = min(int(np.sum(labels == c)) for c in classes)
    if per_label < 2:
        return [], "none"
    folds_n = min(MAX_FOLDS, per_label)
    rng = np.random.default_rng(0)
    assignment = np.empty(len(labels), dtype=int)
    for c in classes:
        members = rng.permutation(np.flatnonzero(labels == c))
        assignment[members] = np.arange(len(members)) % folds_n
    return [np.flatnonzero(assignment == f) for f in range(folds_n)], "clip"


def choose_l2(memories, labels, folds, num_classes: int, choices=L2_CHOICES, progress=None, cancel=None):
    """The regularisation with the best cross-validated accuracy (ties: the stronger one).

    Returns (l2, the held-out prediction of every clip, accuracy per fold).
    """
    scored = []
    for k, l2 in enumerate(choices):
        _check(cancel)
        pred = cross_validate(memories, labels, folds, num_classes, l2)
        per_fold = [float(np.mean(pred[test] == labels[test])) for test in folds]
        scored.append((round(float(np.mean(pred == labels)), 6), l2, pred, per_fold))
        _report(progress, "cross-validation", (k + 1) * len(folds), len(choices) * len(folds))
    _, l2, pred, per_fold = max(scored, key=lambda s: (s[0], s[1]))
    return l2, pred, per_fold


def cross_validate(memories, labels: np.ndarray, folds, num_classes: int, l2: float) -> np.ndarray:
    """Last-frame prediction of every clip by a head fitted without its fold."""
    pred = np.empty_like(labels)
    for test in folds:
        train = np.setdiff1d(np.arange(len(labels)), test)
        mean, std = frame_stats([memories[i] for i in train])
        weight, bias = fit_softmax([memories[i] for i in train], labels[train], num_classes, l2, mean, std)
        last = np.stack([memories[i][-1] for i in test])
        pred[test] = (((last - mean) / std) @ weight.T + bias).argmax(1)
    return pred


def fit_model(model: DCRN, memories, labels: np.ndarray, l2: float) -> None:
    """Fit the cell's standardisation and the linear head on every clip, in place."""
    mean, std = frame_stats(memories)
    weight, bias = fit_softmax(memories, labels, model.config.num_classes, l2, mean, std)
    with torch.no_grad():
        model.cell.out_mean.copy_(torch.from_numpy(mean))
        model.cell.out_std.copy_(torch.from_numpy(std))
        linear = model.head[-1]
        linear.weight.copy_(torch.from_numpy(weight))
        linear.bias.copy_(torch.from_numpy(bias))


def frame_stats(memories) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([m[min(WARMUP_FRAMES, len(m) - 1) :] for m in memories])
    return x.mean(0).astype(np.float32), np.maximum(x.std(0), 1e-4).astype(np.float32)


def fit_softmax(
    memories, labels, num_classes: int, l2: float, mean, std, clip_weights=None
) -> tuple[np.ndarray, np.ndarray]:
    """L2-regularised softmax regression on every frame after the warm-up; each clip weighs the same, or
    ``clip_weights[i]`` (one per clip; e.g. 1 / its label's clip count for every label to weigh the same)."""
    xs, ys, ws = [], [], []
    if clip_weights is None:
        clip_weights = np.ones(len(memories))
    for memory, label, clip_weight in zip(memories, labels, clip_weights, strict=True):
        frames = memory[min(WARMUP_FRAMES, len(memory) - 1) :]
        xs.append((frames - mean) / std)
        ys.append(np.full(len(frames), label))
        ws.append(np.full(len(frames), clip_weight / len(frames)))
    x = torch.from_numpy(np.concatenate(xs).astype(np.float32))  # (N, D)
    y = torch.from_numpy(np.concatenate(ys)).long()
    w = torch.from_numpy(np.concatenate(ws).astype(np.float32))
    w = w / w.sum()
    weight = torch.zeros(num_classes, x.shape[1], requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = (torch.nn.functional.cross_entropy(x @ weight.T + bias, y, reduction="none") * w).sum()
        loss = loss + l2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach().numpy(), bias.detach().numpy()
