"""Cross-validation by source group: folds that never split a source video, and honest per-fold scores.

The folds come from the data folder's ``clips.csv`` groups (see :mod:`dcrn.models.data`): groups are
taken largest first and each goes to the fold with the fewest clips so far (ties: the fold whose class
counts it balances best, then the lowest fold number), so the folds are about equal in size and no
source group is ever on both sides of a split. Each fold is trained with ``dcrn train --val-groups``
(the checkpoint's meta records the groups it held out); :func:`score_checkpoint` then scores the
checkpoint on exactly those groups, the way ``dcrn eval`` scores clips: every clip from a fresh state,
its prediction the one at its last frame. With a frozen encoder the per-frame features come from the
training run's feature cache, so scoring a fold takes seconds.

Score the *last* epoch of each fold (``OUT.last.pt``), not ``OUT``: ``OUT`` is the epoch that did best on
the held-out groups, and choosing it by the test fold would flatter the result.

    python -m dcrn.models.crossval folds --data DIR [--folds 5]           # one line of groups per fold
    python -m dcrn.models.crossval score --data DIR --json PATH FOLD.last.pt ...
    python -m dcrn.models.crossval export ALL.last.pt OUT.pt [--cv-json PATH]   # weights and meta only
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .data import DataIndex, scan
from .errors import DataError

log = logging.getLogger(__name__)


def group_folds(index: DataIndex, folds: int = 5) -> list[list[str]]:
    """Source groups of each fold (see the module notes); every group is in exactly one fold."""
    counts: dict[str, Counter] = {}
    for sample in index.clips:
        counts.setdefault(sample.group, Counter())[sample.label] += 1
    if len(counts) < folds:
        raise DataError(f"{index.root}: {len(counts)} source groups cannot make {folds} folds")
    totals = [Counter() for _ in range(folds)]
    members: list[list[str]] = [[] for _ in range(folds)]
    classes = range(len(index.classes))

    def cost(f: int, group: Counter) -> tuple:
        size = sum(totals[f].values()) + sum(group.values())
        spread = [totals[f][c] + group[c] for c in classes]
        return size, max(spread) - min(spread), f

    for name in sorted(counts, key=lambda g: (-sum(counts[g].values()), g)):
        best = min(range(folds), key=lambda f: cost(f, counts[name]))
        totals[best] += counts[name]
        members[best].append(name)
    return [sorted(m) for m in members]


@dataclass
class FoldScore:
    checkpoint: str
    val_groups: list[str]
    num_clips: int
    accuracy: float  # clips whose last-frame prediction is right
    balanced_accuracy: float  # mean recall over the classes present in the fold
    per_class_recall: dict[str, float]
    train_wall_s: float | None


def held_out_clips(path: str | Path, data: Path, *, feature_cache: Path | None = None):
    """A fold checkpoint -> (model, meta, the clips of the groups it held out, their FeatureStore)."""
    model, meta = load_checkpoint(path)
    held = list((meta.get("trained_with") or {}).get("val_groups") or [])
    if not held:
        raise DataError(f"{path}: the checkpoint records no --val-groups; it is not a cross-validation fold")
    from .features import FeatureStore

    index = scan(data, model.config.class_names)
    clips = index.subset([s for s in index.clips if s.group in held])
    if not clips.samples:
        raise DataError(f"{path}: held-out groups {held} select no clips in {data}")
    return model, meta, clips, FeatureStore(clips, model, cache_dir=feature_cache)


@torch.no_grad()
def score_checkpoint(path: str | Path, data: Path, *, feature_cache: Path | None = None) -> FoldScore:
    """Clip accuracy of a fold checkpoint on the groups it held out (read from its meta)."""
    model, meta, clips, store = held_out_clips(path, data, feature_cache=feature_cache)
    labels = np.array([s.label for s in clips.samples])
    preds = np.array([_last_frame_prediction(model, store.load(i)[0]) for i in range(len(clips))])
    recall = {
        name: float(np.mean(preds[labels == c] == c)) for c, name in enumerate(clips.classes) if (labels == c).any()
    }
    return FoldScore(
        checkpoint=str(path),
        val_groups=list(meta["trained_with"]["val_groups"]),
        num_clips=len(clips.samples),
        accuracy=float(np.mean(preds == labels)),
        balanced_accuracy=float(np.mean(list(recall.values()))),
        per_class_recall=recall,
        train_wall_s=meta.get("train_wall_s"),
    )


def _last_frame_prediction(model, features: np.ndarray) -> int:
    """A clip's per-frame features (T, F) from a fresh state -> the class predicted at its last frame."""
    logits, _ = model.forward_features(torch.from_numpy(features)[None].float())  # (1, T, C)
    return int(logits[0, -1].argmax())


def summarize(scores: list[FoldScore]) -> dict:
    acc = np.array([s.accuracy for s in scores])
    bal = np.array([s.balanced_accuracy for s in scores])
    clips = sum(s.num_clips for s in scores)
    pooled = sum(s.accuracy * s.num_clips for s in scores) / max(clips, 1)
    return {
        "folds": [asdict(s) for s in scores],
        "accuracy_mean": round(float(acc.mean()), 4),
        "accuracy_std": round(float(acc.std()), 4),
        "balanced_accuracy_mean": round(float(bal.mean()), 4),
        "balanced_accuracy_std": round(float(bal.std()), 4),
        "pooled_accuracy": round(float(pooled), 4),  # all held-out clips together
        "num_clips": clips,
    }


def export_weights(last: Path, out: Path, cross_validation: dict | None = None) -> Path:
    """Copy a checkpoint without its optimizer payload (e.g. an ``OUT.last.pt`` to ship); ``cross_validation``
    (a :func:`summarize` result) goes into its meta, so the shipped file carries the numbers behind it."""
    model, meta = load_checkpoint(last)
    meta.pop("path", None)
    if meta.get("history"):
        meta["epoch"] = meta["history"][-1]["epoch"]  # the weights are this epoch's, whatever best_epoch says
    if cross_validation is not None:
        meta["cross_validation"] = cross_validation
    return save_checkpoint(out, model, meta=meta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dcrn.models.crossval", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    folds = sub.add_parser("folds", help="print the source groups of each fold, one comma-separated line per fold")
    folds.add_argument("--data", type=Path, required=True)
    folds.add_argument("--folds", type=int, default=5)
    score = sub.add_parser("score", help="score fold checkpoints on their held-out groups")
    score.add_argument("--data", type=Path, required=True)
    score.add_argument("--feature-cache", type=Path)
    score.add_argument("--json", type=Path, dest="json_path")
    score.add_argument("checkpoints", nargs="+", type=Path)
    export = sub.add_parser("export", help="write a checkpoint's weights and meta without the optimizer state")
    export.add_argument("checkpoint", type=Path)
    export.add_argument("out", type=Path)
    export.add_argument("--cv-json", type=Path, help="a 'score --json' summary to store in the checkpoint's meta")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "folds":
        for groups in group_folds(scan(args.data), args.folds):
            print(",".join(groups))
        return 0
    if args.command == "export":
        cv = json.loads(args.cv_json.read_text()) if args.cv_json else None
        log.info("wrote %s", export_weights(args.checkpoint, args.out, cv))
        return 0
    scores = [score_checkpoint(p, args.data, feature_cache=args.feature_cache) for p in args.checkpoints]
    summary = summarize(scores)
    for k, s in enumerate(scores):
        log.info(
            "fold %d: %d clips, accuracy %.3f, balanced %.3f (%s)",
            k + 1,
            s.num_clips,
            s.accuracy,
            s.balanced_accuracy,
            ",".join(s.val_groups),
        )
    log.info(
        "accuracy %.3f ± %.3f (balanced %.3f ± %.3f, pooled %.3f) over %d folds",
        summary["accuracy_mean"],
        summary["accuracy_std"],
        summary["balanced_accuracy_mean"],
        summary["balanced_accuracy_std"],
        summary["pooled_accuracy"],
        len(scores),
    )
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
