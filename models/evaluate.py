"""Evaluation: clip accuracy, how early the model knows, streaming accuracy and detection delay.

* **Clips** (one action each): the model runs over the whole clip from a fresh state; the clip's
  prediction is the one at its last frame. Top-1 / top-5, per-class precision / recall, the confusion
  matrix, accuracy as a function of frames observed (the prediction after t frames, for each t), and
  the clips it got wrong (``wrong``: clip, true label, prediction and its probability).
* **Streams** (per-frame labels): the model runs over the whole stream with its state carried along,
  exactly as live streaming does. Per-frame accuracy over labelled frames, and the detection delay
  after each change of action: the time from the change until the prediction first shows the new
  action (a change never detected before the next one counts its whole segment).
* **Order-agnostic baseline** (temporal-order check): the mean of the same encoder's per-frame features
  over the clip, with a linear (softmax) classifier fitted on training clips, or by k-fold cross-fitting
  on the evaluated clips when no training folder is given. It sees every frame but not their order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .data import DataIndex, Sample, scan
from .dcrn import DCRN
from .errors import DataError
from .progress import Progress
from .video_io import read_frame_labels, read_video

log = logging.getLogger(__name__)


@dataclass
class EvalOptions:
    data: Path  # folder of class folders and/or labelled streams (its test/ or val/ part if it has one)
    model: str  # checkpoint path or shipped model name
    max_frames: int = 0  # clips: frames read per clip (0: all)
    baseline: bool = True  # fit and report the order-agnostic baseline
    baseline_train: Path | None = None  # training clips for the baseline; None: k-fold on the evaluated clips
    baseline_folds: int = 5
    batch_size: int = 16
    device: str = "cpu"
    threads: int = 0
    progress: bool = True  # a progress bar on a terminal (a log line every 30 s otherwise)
    # A ``features`` model's per-frame vectors of a clip: (model, path, max_frames) -> ((T, F), fps). The
    # engine's front end (dcrn.engine.keypoints.front.clip_inputs) runs the keypoint graphs this package cannot.
    vectors: Callable[[DCRN, Path, int | None], tuple[np.ndarray, float]] | None = None


@dataclass
class ClipOutputs:
    labels: np.ndarray  # (N,) true class per clip
    logits: list[np.ndarray]  # per clip (T_i, C)
    mean_features: np.ndarray  # (N, F) mean per-frame encoder features
    names: list[str] | None = None  # per clip, its path relative to the data folder


def evaluate(options: EvalOptions) -> dict:
    started = time.monotonic()
    if options.threads:
        torch.set_num_threads(options.threads)
    model, meta = load_checkpoint(options.model, map_location=options.device)
    classes = model.config.class_names
    index = _eval_index(Path(options.data), classes)
    result: dict = {"model": meta["path"], "data": str(index.root), "classes": list(classes)}
    result.update(_empty_clip_metrics(classes))
    if index.clips:
        outputs = run_clips(model, index.clips, options, root=index.root)
        result.update(clip_metrics(outputs, classes))
        if options.baseline:
            result["baseline"] = baseline_score(model, outputs, options, classes)
    if index.streams:
        result.update(stream_metrics(model, index, options))
    result["eval_seconds"] = round(time.monotonic() - started, 1)
    return result


def _eval_index(root: Path, classes) -> DataIndex:
    for name in ("test", "val"):
        if (root / name).is_dir():
            return scan(root / name, classes)
    return scan(root, classes)


def _normalise(frames: np.ndarray, model: DCRN) -> torch.Tensor:
    """(T, S, S, 3) uint8 -> (T, 3, S, S) normalised float on the model's device."""
    device = next(model.parameters()).device
    x = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float() / 255  # (T, 3, S, S)
    mean = torch.tensor(model.config.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.config.std, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def _encode(model: DCRN, frames: np.ndarray, batch: int = 128) -> torch.Tensor:
    return torch.cat([model.encode(_normalise(frames[i : i + batch], model)) for i in range(0, len(frames), batch)])


@torch.no_grad()
def clip_inputs(model: DCRN, path: Path, options: EvalOptions, max_frames: int | None = None):
    """A clip's cell inputs (T, *feature_shape) from a fresh state, and its frame rate."""
    if model.takes_vectors:
        if options.vectors is None:
            raise DataError(f"evaluating a {'+'.join(model.config.features)} model needs its keypoint front end")
        vectors, fps = options.vectors(model, Path(path), max_frames)
        return torch.from_numpy(np.asarray(vectors, np.float32)), fps
    frames, fps = read_video(path, model.config.input_size, max_frames)  # (T, S, S, 3)
    return _encode(model, frames), fps


@torch.no_grad()
def run_clips(
    model: DCRN, clips: tuple[Sample, ...], options: EvalOptions, root: Path | None = None, title: str = "eval"
) -> ClipOutputs:
    """Every clip from a fresh state: per-frame logits and the mean encoder feature."""
    logits, features = [], []
    log.info("%s: %d clips, each from a fresh state", title, len(clips))
    bar = Progress(len(clips), title, enabled=options.progress)
    right = 0
    try:
        for sample in clips:
            feats, _ = clip_inputs(model, sample.path, options, options.max_frames or None)  # (T, F)
            out, _ = model.forward_features(feats[None])  # (1, T, C)
            logits.append(out[0].float().cpu().numpy())
            features.append(feats.float().mean(0).flatten().cpu().numpy())  # (F,) or (C*h*w,)
            right += int(logits[-1][-1].argmax() == sample.label)
            bar.update(acc=right / len(logits))
    finally:
        bar.close()
    names = [_relative(s.path, root) for s in clips]
    return ClipOutputs(np.array([s.label for s in clips]), logits, np.stack(features), names)


def _relative(path: Path, root: Path | None) -> str:
    try:
        return str(path.relative_to(root)) if root is not None else str(path)
    except ValueError:
        return str(path)


def clip_metrics(outputs: ClipOutputs, classes) -> dict:
    final = np.stack([lg[-1] for lg in outputs.logits])  # (N, C)
    labels = outputs.labels
    ranked = np.argsort(-final, axis=1)
    pred = ranked[:, 0]
    k = min(5, len(classes))
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = {}
    for c, name in enumerate(classes):
        tp = confusion[c, c]
        support = int(confusion[c].sum())
        predicted = int(confusion[:, c].sum())
        per_class[name] = {
            "precision": round(tp / predicted, 4) if predicted else None,
            "recall": round(tp / support, 4) if support else None,
            "support": support,
        }
    longest = max(len(lg) for lg in outputs.logits)
    by_frames = []
    for t in range(longest):
        hits = [lg[t].argmax() == y for lg, y in zip(outputs.logits, labels, strict=True) if len(lg) > t]
        by_frames.append(round(float(np.mean(hits)), 4))
    wrong = []
    for i in np.flatnonzero(pred != labels):
        probs = np.exp(final[i] - final[i].max())
        probs /= probs.sum()
        wrong.append(
            {
                "clip": outputs.names[i] if outputs.names else str(i),
                "label": classes[labels[i]],
                "predicted": classes[pred[i]],
                "score": round(float(probs[pred[i]]), 4),  # the predicted class's probability at the last frame
                "label_score": round(float(probs[labels[i]]), 4),
            }
        )
    return {
        "top1": round(float(np.mean(pred == labels)), 4),
        "top5": round(float(np.mean([y in r[:k] for y, r in zip(labels, ranked, strict=True)])), 4),
        "num_clips": len(labels),
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "accuracy_by_frames": by_frames,
        "wrong": sorted(wrong, key=lambda w: -w["score"]),  # the most confident mistakes first
    }


def _empty_clip_metrics(classes) -> dict:
    return {"top1": None, "top5": None, "num_clips": 0, "per_class": {}}


def baseline_score(model: DCRN, outputs: ClipOutputs, options: EvalOptions, classes) -> dict:
    """Top-1 of a softmax classifier on order-free mean features (same encoder)."""
    x, y = outputs.mean_features, outputs.labels
    if options.baseline_train is not None:
        train_index = scan(Path(options.baseline_train), classes)
        if not train_index.clips:
            raise DataError(f"{options.baseline_train}: no clips to fit the baseline on")
        train_out = run_clips(model, train_index.clips, options, title="baseline training clips")
        weights = _fit_softmax(train_out.mean_features, train_out.labels, len(classes))
        pred = _predict(weights, x)
        method = f"mean features + linear classifier fitted on {len(train_out.labels)} clips"
    else:
        folds = max(2, min(options.baseline_folds, len(y)))
        order = np.random.default_rng(0).permutation(len(y))
        pred = np.empty_like(y)
        for f in range(folds):
            test = order[f::folds]
            train = np.setdiff1d(order, test)
            pred[test] = _predict(_fit_softmax(x[train], y[train], len(classes)), x[test])
        method = f"mean features + linear classifier, {folds}-fold cross-fitted on the evaluated clips"
    return {"top1": round(float(np.mean(pred == y)), 4), "method": method}


def _fit_softmax(x: np.ndarray, y: np.ndarray, num_classes: int, steps: int = 300) -> tuple:
    mu, sigma = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mu) / sigma).float()  # (N, F)
    yt = torch.from_numpy(y).long()
    linear = torch.nn.Linear(xt.shape[1], num_classes)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(xt), yt) + 1e-3 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return mu, sigma, linear


def _predict(weights: tuple, x: np.ndarray) -> np.ndarray:
    mu, sigma, linear = weights
    with torch.no_grad():
        return linear(torch.from_numpy((x - mu) / sigma).float()).argmax(1).numpy()


@torch.no_grad()
def run_stream(
    model: DCRN, sample: Sample, classes, options: EvalOptions, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray, float]:
    """The whole stream with the state carried along -> (predicted, true) per frame, and its fps."""
    inputs, fps = clip_inputs(model, sample.path, options)  # (N, ...)
    labels = read_frame_labels(sample.frame_labels, classes)[: len(inputs)]
    labels = np.concatenate([labels, np.full(len(inputs) - len(labels), -1)])
    state = None
    preds = []
    for start in range(0, len(inputs), chunk):
        feats = inputs[start : start + chunk][None]  # (1, t, F)
        logits, state = model.forward_features(feats, state)  # (1, t, C)
        preds.append(logits[0].argmax(-1).cpu().numpy())
    return np.concatenate(preds), labels, fps or 30.0


def detection_delays(pred: np.ndarray, true: np.ndarray) -> list[int]:
    """Frames from each change of the true label until the prediction first shows the new label."""
    delays = []
    changes = [c for c in range(1, len(true)) if true[c] != true[c - 1] and true[c] >= 0 and true[c - 1] >= 0]
    for i, c in enumerate(changes):
        end = changes[i + 1] if i + 1 < len(changes) else len(true)
        segment = true[c:end]
        end = c + int(np.argmax(segment != true[c])) if (segment != true[c]).any() else end
        hits = np.flatnonzero(pred[c:end] == true[c])
        delays.append(int(hits[0]) if len(hits) else end - c)
    return delays


def stream_metrics(model: DCRN, index: DataIndex, options: EvalOptions) -> dict:
    correct = counted = 0
    delays_s: list[float] = []
    per_stream = []
    log.info("eval: %d streams, each with its state carried along", len(index.streams))
    bar = Progress(len(index.streams), "eval streams", enabled=options.progress)
    for sample in index.streams:
        pred, true, fps = run_stream(model, sample, index.classes, options)
        bar.update()
        mask = true >= 0
        hits = int((pred == true)[mask].sum())
        correct += hits
        counted += int(mask.sum())
        delays = [d / fps for d in detection_delays(pred, true)]
        delays_s += delays
        per_stream.append(
            {
                "stream": sample.path.name,
                "frames": int(mask.sum()),
                "per_frame_accuracy": round(hits / max(int(mask.sum()), 1), 4),
                "changes": len(delays),
                "mean_delay_s": round(float(np.mean(delays)), 3) if delays else None,
            }
        )
    bar.close()
    return {
        "per_frame_accuracy": round(correct / max(counted, 1), 4),
        "mean_delay_s": round(float(np.mean(delays_s)), 3) if delays_s else None,
        "median_delay_s": round(float(np.median(delays_s)), 3) if delays_s else None,
        "num_stream_frames": counted,
        "num_changes": len(delays_s),
        "streams": per_stream,
    }
