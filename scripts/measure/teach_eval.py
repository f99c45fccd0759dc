"""How well `dcrn teach` learns order-dependent actions from few clips, on real footage it never saw.

Two evaluation sets are made from the real footage in ../shared/data (nothing is downloaded):

* ``camera``: camera motion over real surveillance and indoor footage (people fighting, walking, falling):
  a moving, zooming or turning crop of each source video, 2 s per clip, with a little hand-held jitter.
  Nine classes: pan_left, pan_right, tilt_up, tilt_down, zoom_in, zoom_out, rotate_cw, rotate_ccw, still.
  Each class but ``still`` has a partner that is the same footage played with the opposite motion, so only
  the direction of motion tells them apart. ``camera5`` is the 5-label subset pan_left, pan_right,
  tilt_up, tilt_down, still. Held-out splits are by source video group (fight-cctv's ``source_group``,
  gmdcsa24's subject): test clips come from footage that no training clip was cut from.
* ``falls``: people's bodies. The 3 s around the start of every GMDCSA24 fall (from the subjects' label
  files) as filmed (``falls``) and played backwards (``gets_up``): the same frames, only the order
  differs. Held out by subject (leave one subject out); 14 clips of each label in all.

For each set and each number of training clips per label (1, 3, 5, 10), heads are fitted on that many
clips per label drawn from the training groups (5 draws, seeded) and scored on every held-out clip by its
last frame's prediction, as ``dcrn eval`` does. Printed beside: the worst fold, the same model on the test
clips with their frames shuffled in time, and an order-agnostic baseline (a linear classifier on each
clip's mean brightness map, the `dcrn eval` baseline for this encoder) with 10 clips per label.

    .venv/bin/python -m scripts.measure.teach_eval        # about 10 minutes on 2 cores, most of it decoding
    .venv/bin/python -m scripts.measure.teach_eval --json docs/results/teach_eval.json
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from dcrn.models.data import Sample
from dcrn.models.dcrn import DCRN
from dcrn.models.teach import FeatureCache, frame_features, teach_config
from dcrn.models.teach_fit import DEFAULT_L2, choose_l2, cv_folds, fit_softmax, frame_stats
from dcrn.models.video_io import read_video, write_video
from scripts.measure import harness
from tests.fixtures.paths import SHARED

DATA = SHARED / "data"  # the real footage

CAMERA_CLASSES = (
    "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out", "rotate_cw", "rotate_ccw", "still",
)  # fmt: skip
CAMERA5 = ("pan_left", "pan_right", "tilt_up", "tilt_down", "still")
CLIP_FRAMES = 50  # 2 s at 25 fps: fight-cctv clips are about that long
OUT_W, OUT_H = 320, 240
SHOTS = (1, 3, 5, 10)
DRAWS = 5


def sources() -> list[tuple[Path, str]]:
    """(video, group) of every real source clip: fight-cctv by source group, gmdcsa24 by subject."""
    out = []
    with open(DATA / "fight-cctv" / "clips.csv") as handle:
        for row in csv.DictReader(handle):
            out.append((DATA / "fight-cctv" / row["clip"], "cctv-" + row["source_group"]))
    for video in sorted((DATA / "gmdcsa24").glob("Subject */*/*.mp4")):
        out.append((video, "gmd-s" + video.parts[-3].split()[-1]))
    return out


def camera_clip(frames: np.ndarray, motion: str, rng: np.random.Generator) -> np.ndarray:
    """A crop of ``frames`` (T, H, W, 3) that pans, tilts, zooms, turns or holds still, resized to 320x240."""
    steps, height, width = frames.shape[:3]
    scale0 = rng.uniform(0.55, 0.7)  # crop size as a fraction of the frame
    speed = rng.uniform(0.5, 1.5)  # how far the motion goes over the clip, relative to its range
    t = np.linspace(0, 1, steps)
    cx = np.full(steps, width / 2) + rng.uniform(-0.05, 0.05) * width
    cy = np.full(steps, height / 2) + rng.uniform(-0.05, 0.05) * height
    scale = np.full(steps, scale0)
    angle = np.zeros(steps)
    reach_x, reach_y = (1 - scale0) * width / 2 * 0.9, (1 - scale0) * height / 2 * 0.9
    if motion in ("pan_left", "pan_right"):
        sign = -1 if motion == "pan_left" else 1  # the view moves left: content moves right in the frame
        cx = width / 2 + sign * reach_x * speed * (t - 0.5) * 2 / 1.5
    elif motion in ("tilt_up", "tilt_down"):
        sign = -1 if motion == "tilt_up" else 1
        cy = height / 2 + sign * reach_y * speed * (t - 0.5) * 2 / 1.5
    elif motion in ("zoom_in", "zoom_out"):
        ratio = 1 - 0.35 * speed / 1.5  # the crop shrinks to this fraction while zooming in
        grow = scale0 * ratio**t
        scale = grow if motion == "zoom_in" else grow[::-1]
    elif motion in ("rotate_cw", "rotate_ccw"):
        sign = 1 if motion == "rotate_ccw" else -1
        angle = sign * 20 * speed / 1.5 * (t - 0.5) * 2
    jitter = np.cumsum(rng.normal(0, 0.4, (steps, 2)), axis=0)  # hand-held shake, in pixels
    out = np.empty((steps, OUT_H, OUT_W, 3), dtype=np.uint8)
    for k in range(steps):
        crop_w = scale[k] * width
        zoom = OUT_W / crop_w
        matrix = cv2.getRotationMatrix2D((float(cx[k] + jitter[k, 0]), float(cy[k] + jitter[k, 1])), angle[k], zoom)
        matrix[:, 2] += (OUT_W / 2 - (cx[k] + jitter[k, 0]), OUT_H / 2 - (cy[k] + jitter[k, 1]))
        out[k] = cv2.warpAffine(frames[k], matrix, (OUT_W, OUT_H), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    return out


def build_camera(root: Path, seed: int = 0) -> Path:
    """Every source clip gives one clip of one class; classes rotate so each group sees them all."""
    folder = root / "camera"
    if (folder / "clips.csv").is_file():
        return folder
    rng = np.random.default_rng(seed)
    rows = []
    counter = 0
    for video, group in sources():
        frames, fps = read_video(video)
        if len(frames) < 20:
            continue
        frames = frames[:CLIP_FRAMES]
        scale = 480 / max(frames.shape[1:3])  # work at <= 480 px: enough for a 320x240 crop
        if scale < 1:
            frames = np.stack([cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) for f in frames])
        for _ in range(2):  # two clips of different classes from each source clip
            motion = CAMERA_CLASSES[counter % len(CAMERA_CLASSES)]
            counter += 1
            name = f"{motion}/{group}-{video.stem}-{counter:04d}.mp4"
            write_video(folder / name, camera_clip(frames, motion, rng), fps or 25)
            rows.append((name, motion, group))
    _write_groups(folder, rows)
    return folder


def fall_starts() -> dict[Path, float]:
    """When each GMDCSA24 fall begins, in seconds, from the subjects' hand-written ``Fall.csv`` rows."""
    starts = {}
    for table in (DATA / "gmdcsa24").glob("Subject */Fall.csv"):
        with open(table, newline="") as handle:
            for row in csv.reader(handle):
                found = re.search(r"fall\w*\s*\(?\w*\)?\s*\[\s*([\d.]+)\s*to", ",".join(row[1:]), re.IGNORECASE)
                if row and found:
                    starts[table.parent / "Fall" / row[0].strip()] = float(found.group(1))
    return starts


def build_falls(root: Path) -> Path:
    """3 s around the start of each fall (1 s before, 2 s after), as filmed and played backwards."""
    folder = root / "falls"
    if (folder / "clips.csv").is_file():
        return folder
    rows = []
    starts = fall_starts()
    for video in sorted((DATA / "gmdcsa24").glob("Subject */Fall/*.mp4")):
        frames, fps = read_video(video)
        start = starts.get(video)
        if start is not None:
            first = max(0, round((start - 1) * (fps or 30)))
            frames = frames[first : first + round(3 * (fps or 30))]
        frames = np.stack([cv2.resize(f, (OUT_W, OUT_H), interpolation=cv2.INTER_AREA) for f in frames])
        group = "s" + video.parts[-3].split()[-1]
        for label, clip in (("falls", frames), ("gets_up", frames[::-1])):
            name = f"{label}/{group}-{video.stem}.mp4"
            write_video(folder / name, clip, fps or 30)
            rows.append((name, label, group))
    _write_groups(folder, rows)
    return folder


def _write_groups(folder: Path, rows) -> None:
    with open(folder / "clips.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["clip", "label", "source_group"])
        writer.writerows(rows)


def load_set(folder: Path, classes: tuple[str, ...], cache: FeatureCache, model: DCRN):
    with open(folder / "clips.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["label"] in classes]
    paths = [folder / r["clip"] for r in rows]
    features = cache.features(model, paths)
    memories = [model.cell.memory_trajectory(torch.from_numpy(f)).numpy() for f in features]
    shuffled = []
    rng = np.random.default_rng(1)
    for _ in features:  # the same frames in a random order: flow is measured on the shuffled sequence
        frames, _ = read_video(paths[len(shuffled)], model.config.input_size)
        shuffled.append(frames[rng.permutation(len(frames))])
    labels = np.array([classes.index(r["label"]) for r in rows])
    groups = np.array([r["source_group"] for r in rows])
    return paths, memories, labels, groups, shuffled


def held_out_folds(groups: np.ndarray, folds: int) -> list[set[str]]:
    unique = sorted(set(groups))
    order = np.random.default_rng(0).permutation(len(unique))
    return [{unique[i] for i in order[f::folds]} for f in range(min(folds, len(unique)))]


def select_l2(memories, labels: np.ndarray, num_classes: int) -> float:
    """The regularisation `dcrn teach` would pick on these training clips (cross-validated by clip)."""
    folds, _ = cv_folds([Sample(Path(str(k)), int(y), None, str(k)) for k, y in enumerate(labels)], labels)
    return choose_l2(memories, labels, folds, num_classes)[0] if folds else DEFAULT_L2


def evaluate_set(name, folder, classes, folds, model, cache) -> dict:
    paths, memories, labels, groups, shuffled = load_set(folder, classes, cache, model)
    shuffled_memories = [
        model.cell.memory_trajectory(torch.from_numpy(frame_features(model, frames))).numpy() for frames in shuffled
    ]
    appearance = [np.asarray(cv2.resize(read_video(p, 24)[0].mean(0).mean(-1), (12, 12))).ravel() for p in paths]
    result = {"classes": list(classes), "clips": len(labels), "groups": len(set(groups)), "shots": {}}
    for shots in SHOTS:
        fold_acc, shuffled_acc, base_acc = [], [], []
        for held in held_out_folds(groups, folds):
            test = np.flatnonzero([g in held for g in groups])
            pool = np.flatnonzero([g not in held for g in groups])
            draws = []
            for draw in range(DRAWS):
                rng = np.random.default_rng(100 * shots + draw)
                train = []
                for c in range(len(classes)):
                    members = pool[labels[pool] == c]
                    if len(members):
                        train += list(rng.choice(members, min(shots, len(members)), replace=False))
                train = np.array(train)
                l2 = select_l2([memories[i] for i in train], labels[train], len(classes))  # as `dcrn teach` does
                mean, std = frame_stats([memories[i] for i in train])
                weight, bias = fit_softmax([memories[i] for i in train], labels[train], len(classes), l2, mean, std)

                def score(mems, idx, mean=mean, std=std, weight=weight, bias=bias):
                    last = np.stack([mems[i][-1] for i in idx])
                    return float(np.mean((((last - mean) / std) @ weight.T + bias).argmax(1) == labels[idx]))

                draws.append((score(memories, test), score(shuffled_memories, test)))
                if shots == SHOTS[-1]:
                    x = np.stack([appearance[i] for i in train])
                    mu, sd = x.mean(0), x.std(0) + 1e-6
                    rows = [((x - mu) / sd)[k : k + 1] for k in range(len(train))]  # one "frame" per clip
                    ones = np.ones(x.shape[1], np.float32)
                    l2_b = select_l2(rows, labels[train], len(classes))
                    w_b, b_b = fit_softmax(rows, labels[train], len(classes), l2_b, 0 * ones, ones)
                    xt = (np.stack([appearance[i] for i in test]) - mu) / sd
                    base_acc.append(float(np.mean((xt @ w_b.T + b_b).argmax(1) == labels[test])))
            fold_acc.append(float(np.mean([d[0] for d in draws])))
            shuffled_acc.append(float(np.mean([d[1] for d in draws])))
        entry = {
            "mean": round(float(np.mean(fold_acc)), 3),
            "worst_fold": round(float(np.min(fold_acc)), 3),
            "folds": [round(a, 3) for a in fold_acc],
            "frames_shuffled": round(float(np.mean(shuffled_acc)), 3),
        }
        if base_acc:
            entry["order_agnostic_baseline"] = round(float(np.mean(base_acc)), 3)
        result["shots"][shots] = entry
        print(f"{name:8s} {shots:>2} clips/label: accuracy {entry['mean']:.3f} (worst fold {entry['worst_fold']:.3f}),"
              f" frames shuffled {entry['frames_shuffled']:.3f}"
              + (f", order-agnostic baseline {entry['order_agnostic_baseline']:.3f}" if base_acc else ""),
              flush=True)  # fmt: skip
    return result


def build_timing_set(root: Path, clips_per_label: int = 10, seconds: float = 3.0) -> Path:
    """5 labels x 10 clips of 3 s (camera5 classes over GMDCSA24 footage): the size the teach budget is for."""
    folder = root / "timing"
    if (folder / "clips.csv").is_file():
        return folder
    rng = np.random.default_rng(7)
    videos = sorted((DATA / "gmdcsa24").glob("Subject */*/*.mp4"))
    rows = []
    for k in range(clips_per_label * len(CAMERA5)):
        video = videos[k % len(videos)]
        frames, fps = read_video(video)
        frames = frames[: round(seconds * (fps or 30))]
        motion = CAMERA5[k % len(CAMERA5)]
        name = f"{motion}/{video.parts[-3].replace(' ', '')}-{video.stem}-{k:03d}.mp4"
        write_video(folder / name, camera_clip(frames, motion, rng), fps or 30)
        rows.append((name, motion, f"take{k // len(CAMERA5) % 3}"))
    _write_groups(folder, rows)
    return folder


def time_teach(root: Path) -> dict:
    """`dcrn teach` on the timing set twice: features computed, then all from the cache."""
    import subprocess

    data = build_timing_set(root)
    cache = root / "timing-cache"
    shutil.rmtree(cache, ignore_errors=True)
    timings = {}
    for run in ("first", "cached"):
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "dcrn.app", "teach", "--data", str(data), "--out", str(root / "timing.pt"),
             "--cache", str(cache), "--no-progress", "--json", str(root / f"timing-{run}.json")],
            check=True, cwd=harness.REPO,
        )  # fmt: skip
        timings[run] = round(time.monotonic() - started, 1)
    print(f"dcrn teach, 5 labels x 10 clips of 3 s: {timings['first']} s with features computed, "
          f"{timings['cached']} s from the cache; model {root / 'timing.pt'}")  # fmt: skip
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=harness.RUNS / "teach-eval", help="where the sets are made")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--sets", default="camera5,camera,falls")
    parser.add_argument("--timing", action="store_true", help="also time `dcrn teach` on 5 labels x 10 clips of 3 s")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.monotonic()
    model = DCRN(teach_config(CAMERA_CLASSES)).eval()  # the features do not depend on the labels
    cache = FeatureCache(args.work / "features")
    results = {}
    wanted = [name for name in args.sets.split(",") if name]
    if {"camera", "camera5"} & set(wanted):
        camera = build_camera(args.work)
        if "camera5" in wanted:
            results["camera5"] = evaluate_set("camera5", camera, CAMERA5, 5, model, cache)
        if "camera" in wanted:
            results["camera"] = evaluate_set("camera", camera, CAMERA_CLASSES, 5, model, cache)
    if "falls" in wanted:
        results["falls"] = evaluate_set("falls", build_falls(args.work), ("falls", "gets_up"), 4, model, cache)
    if args.timing:
        results["teach_seconds"] = time_teach(args.work)
    print(f"done in {time.monotonic() - started:.0f} s")
    if args.json:
        harness.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    harness.run(main)
