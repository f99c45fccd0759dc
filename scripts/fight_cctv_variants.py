"""Variants of the fight-cctv recipe on the source-group cross-validation, from the cached features.

Each run trains the 5 folds with the recipe of ``scripts/train-fight-cctv`` (``dcrn.models.train.train``,
the same options, one process, one thread), with any ``dcrn train`` option changed, and scores every
fold's **last** epoch on its held-out groups the way ``python -m dcrn.models.crossval score`` does (each
clip from a fresh state, its last frame). It keeps every clip's last-frame logits, held-out and training,
so seeds can be averaged and offsets chosen afterwards without training again.

Variants that are not ``dcrn train`` options replace parts of the ``motion_avg`` cell for that run only
(``--patch``, several joined by ``+``); nothing of them is in the model code:

* ``noise=S``: Gaussian noise of S times each feature's spread on the frame features, training only;
* ``fdrop=P``: each frame feature replaced by its mean with probability P, training only;
* ``avgnoise=S``: Gaussian noise of S on the standardised averages the output layer reads, training only;
* ``stats=z,c,...``: which per-frame blocks are averaged: ``z`` (standardised features), ``c`` (change
  against the short average), ``cs`` (change against a slow average, rate ``slow=R``, default 0.1),
  ``cn`` (``c`` over its mean), ``z2`` (``z`` squared), ``logc`` (``log(c + 0.1)``);
* ``changeonly``: ``z`` is zeroed, only the change is averaged;
* ``window=N``: the average covers N frames instead of 64;
* ``balance=M``: each training clip of a source group with n clips is repeated ``round(sqrt(M / n))`` times.

Usage (the feature cache of ``scripts/train-fight-cctv`` must exist; about a minute per run on 2 cores)::

    .venv/bin/python scripts/fight_cctv_variants.py run base --seed 0
    .venv/bin/python scripts/fight_cctv_variants.py run lr1e-4 --seed 1 --set epochs=30 --set lr=1e-4
    .venv/bin/python scripts/fight_cctv_variants.py run win32 --patch window=32
    .venv/bin/python scripts/fight_cctv_variants.py ensemble base/s0 base/s1 base/s2   # logits averaged
    .venv/bin/python scripts/fight_cctv_variants.py offset base/s0   # fight/noFight offset from training clips

Results go to ``runs/fight-cctv-variants/NAME/sSEED/result.json`` (and the fold checkpoints beside it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared/data/fight-cctv"
FEATURES = ROOT / "runs/fight-cctv/features"
OUT = ROOT / "runs/fight-cctv-variants"
os.environ.setdefault("TORCH_HOME", str(ROOT.parent / "shared/weights/torch"))

from dcrn.models import motion_cell  # noqa: E402
from dcrn.models import train as train_module  # noqa: E402

RECIPE = dict(  # scripts/train-fight-cctv's RECIPE
    encoder="mobilenet_v2",
    pretrained=True,
    freeze_encoder=True,
    pool="avg",
    input_size=224,
    cell="motion_avg",
    hidden_size=8,
    dropout=0.0,
    sampling="consecutive",
    stride=1,
    clip_len=32,
    loss_skip_frames=8,
    epochs=15,
    batch_size=16,
    optimizer="adamw",
    lr=3e-4,
    weight_decay=0.5,
    label_smoothing=0.1,
    threads=1,
    progress=False,
)


class MotionStats(motion_cell.MotionAverage):
    """``motion_avg`` averaging other per-frame blocks (``stats=``). State: (avg, ema, slow, count)."""

    BLOCKS: tuple[str, ...] = ("z", "c")
    SLOW = 0.1
    state_names = ("avg", "ema", "slow", "count")

    def __init__(self, in_features: int, hidden: int) -> None:
        torch.nn.Module.__init__(self)
        motion_cell._MotionInput.__init__(self, in_features)
        self.blocks = tuple(MotionStats.BLOCKS)
        width = len(self.blocks) * in_features
        self.hidden = hidden
        self.register_buffer("avg_mean", torch.zeros(width))
        self.register_buffer("avg_std", torch.ones(width))
        self.dropout = torch.nn.Dropout(motion_cell.INPUT_DROPOUT)
        self.out = torch.nn.Linear(width, hidden)

    def state_shapes(self, feature_shape):
        return [(len(self.blocks) * self.in_features,), (self.in_features,), (self.in_features,), (1,)]

    def _advance(self, x, state):
        avg, ema, slow, count = state
        seen = (count > 0).to(x.dtype)
        z = (x - self.input_mean) / self.input_std
        c = seen * (z - ema).abs()
        parts = {
            "z": lambda: z,
            "c": lambda: c,
            "cs": lambda: seen * (z - slow).abs(),
            "z2": lambda: z * z,
            "cn": lambda: c / (c.mean(1, keepdim=True) + 1e-3),
            "logc": lambda: torch.log(c + 0.1),
        }
        u = torch.cat([parts[b]() for b in self.blocks], 1)
        ema = seen * (ema + motion_cell.EMA_RATE * (z - ema)) + (1 - seen) * z
        slow = seen * (slow + MotionStats.SLOW * (z - slow)) + (1 - seen) * z
        count = torch.clamp(count + 1, max=motion_cell.WINDOW)
        return avg + (u - avg) / count, ema, slow, count


def apply_patches(spec: str) -> None:
    """Replace parts of the cell (or the training split) for this process; see the module notes."""
    for part in filter(None, spec.split("+")):
        kind, _, value = part.partition("=")
        motion = motion_cell._MotionInput.motion
        if kind == "changeonly":

            def changeonly(self, x, ema, seen, motion=motion):
                u, ema = motion(self, x, ema, seen)
                return torch.cat([torch.zeros_like(u[:, : self.in_features]), u[:, self.in_features :]], 1), ema

            motion_cell._MotionInput.motion = changeonly
        elif kind == "noise":

            def noisy(self, x, ema, seen, motion=motion, scale=float(value)):
                if self.training:
                    x = x + scale * self.input_std * torch.randn_like(x)
                return motion(self, x, ema, seen)

            motion_cell._MotionInput.motion = noisy
        elif kind == "fdrop":

            def dropped(self, x, ema, seen, motion=motion, p=float(value)):
                if self.training:
                    keep = (torch.rand_like(x) > p).float()
                    x = keep * x + (1 - keep) * self.input_mean
                return motion(self, x, ema, seen)

            motion_cell._MotionInput.motion = dropped
        elif kind == "avgnoise":

            def forward(self, x, state, scale=float(value)):
                state = self._advance(x, state)
                avg = (state[0] - self.avg_mean) / self.avg_std
                if self.training:
                    avg = avg + scale * torch.randn_like(avg)
                return self.out(self.dropout(avg)), state

            motion_cell.MotionAverage.forward = forward
        elif kind == "stats":
            MotionStats.BLOCKS = tuple(value.split(","))
            motion_cell.MOTION_CELLS["motion_avg"] = MotionStats
        elif kind == "slow":
            MotionStats.SLOW = float(value)
        elif kind == "window":
            motion_cell.WINDOW = int(value)
        elif kind == "balance":
            scan_splits = train_module.scan_splits

            def balanced(*args, scan_splits=scan_splits, m=float(value), **kwargs):
                train_index, val_index = scan_splits(*args, **kwargs)
                sizes = Counter(s.group for s in train_index.clips)
                copies = [s for s in train_index.samples for _ in range(max(1, round((m / sizes[s.group]) ** 0.5)))]
                return train_index.subset(copies), val_index

            train_module.scan_splits = balanced
        else:
            raise SystemExit(f"unknown patch {kind!r}")


@torch.no_grad()
def last_logits(model, store, count: int) -> np.ndarray:
    """Each clip's logits at its last frame from a fresh state, as crossval scores them -> (clips, C)."""
    return np.stack(
        [
            model.forward_features(torch.from_numpy(store.load(i)[0])[None].float())[0][0, -1].numpy()
            for i in range(count)
        ]
    )


def run(name: str, seed: int, overrides: dict, patches: str) -> dict:
    from dcrn.models.checkpoint import load_checkpoint
    from dcrn.models.crossval import group_folds
    from dcrn.models.data import scan
    from dcrn.models.features import FeatureStore

    apply_patches(patches)
    folds = group_folds(scan(DATA), 5)
    root = OUT / name / f"s{seed}"
    result = {"name": name, "seed": seed, "overrides": overrides, "patches": patches, "folds": []}
    started = time.monotonic()
    for k, held in enumerate(folds):
        out = root / f"fold{k + 1}.pt"
        options = (
            RECIPE | overrides | dict(data=DATA, feature_cache=FEATURES, seed=seed, val_groups=tuple(held), out=out)
        )
        train_module.train(train_module.TrainOptions(**options))
        model, _ = load_checkpoint(out.with_suffix(".last.pt"))  # the last epoch, never the best one
        index = scan(DATA, model.config.class_names)
        val = index.subset([s for s in index.clips if s.group in held])
        trained = index.subset([s for s in index.clips if s.group not in held])
        val_logits = last_logits(model, FeatureStore(val, model, cache_dir=FEATURES), len(val))
        train_logits = last_logits(model, FeatureStore(trained, model, cache_dir=FEATURES), len(trained))
        labels = np.array([s.label for s in val.samples])
        accuracy = float((val_logits.argmax(1) == labels).mean())
        result["folds"].append(
            {
                "groups": held,
                "accuracy": accuracy,
                "val_logits": val_logits.tolist(),
                "val_labels": labels.tolist(),
                "val_groups": [s.group for s in val.samples],
                "train_logits": train_logits.tolist(),
                "train_labels": [s.label for s in trained.samples],
            }
        )
        print(f"{name} s{seed} fold {k + 1}: {accuracy:.3f}", flush=True)
    accuracies = np.array([f["accuracy"] for f in result["folds"]])
    result |= {"mean": float(accuracies.mean()), "std": float(accuracies.std()), "worst": float(accuracies.min())}
    result["wall_s"] = round(time.monotonic() - started, 1)
    root.mkdir(parents=True, exist_ok=True)
    (root / "result.json").write_text(json.dumps(result) + "\n")
    print(f"{name} s{seed}: {_line(accuracies)}")
    return result


def _line(accuracies: np.ndarray) -> str:
    folds = " ".join(f"{a:.3f}" for a in accuracies)
    return f"{accuracies.mean():.3f} ± {accuracies.std():.3f}, worst fold {accuracies.min():.3f} [{folds}]"


def _load(run_name: str) -> dict:
    return json.loads((OUT / run_name / "result.json").read_text())


def ensemble(runs: list[str]) -> np.ndarray:
    """Accuracy per fold of the runs' logits averaged (for motion_avg: one linear model of the same form)."""
    results = [_load(r) for r in runs]
    out = []
    for k in range(len(results[0]["folds"])):
        logits = np.mean([np.array(r["folds"][k]["val_logits"]) for r in results], 0)
        out.append(float((logits.argmax(1) == np.array(results[0]["folds"][k]["val_labels"])).mean()))
    return np.array(out)


def offset(run_name: str) -> np.ndarray:
    """Accuracy per fold with a logit offset between the two classes chosen on the fold's *training* clips
    (best balanced accuracy there; ties: the smallest offset)."""
    out = []
    for fold in _load(run_name)["folds"]:
        train_logits, train_labels = np.array(fold["train_logits"]), np.array(fold["train_labels"])
        margin = train_logits[:, 1] - train_logits[:, 0]

        def balanced(b, margin=margin, labels=train_labels):
            pred = (margin + b > 0).astype(int)
            return np.mean([np.mean(pred[labels == c] == c) for c in (0, 1)])

        best = max(np.linspace(-3, 3, 121), key=lambda b: (round(balanced(b), 9), -abs(b)))
        val_logits, labels = np.array(fold["val_logits"]), np.array(fold["val_labels"])
        out.append(float(((val_logits[:, 1] - val_logits[:, 0] + best > 0).astype(int) == labels).mean()))
    return np.array(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train and score the 5 folds of one variant and seed")
    r.add_argument("name")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE", help="a dcrn train option")
    r.add_argument("--patch", default="", help="cell variants, joined by '+' (see the module notes)")
    e = sub.add_parser("ensemble", help="average the logits of runs (NAME/sSEED ...)")
    e.add_argument("runs", nargs="+")
    o = sub.add_parser("offset", help="a class offset chosen on the training clips of each fold")
    o.add_argument("run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.command == "run":
        overrides = {}
        for item in args.set:
            key, _, value = item.partition("=")
            overrides[key] = type(RECIPE.get(key, 0.0))(value)
        run(args.name, args.seed, overrides, args.patch)
    elif args.command == "ensemble":
        print(f"ensemble of {' '.join(args.runs)}: {_line(ensemble(args.runs))}")
    else:
        print(f"{args.run} with an offset from its training clips: {_line(offset(args.run))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
