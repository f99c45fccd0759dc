"""How `dcrn teach` does when it may also see hands and bodies (keypoints), on real footage, person held out.

Every set is made from the real footage in ../shared/data (GMDCSA24: 4 subjects, 23 clips; fight-cctv for
the camera set) and Debian's ``opencv-doc`` sample video ``vtest.avi`` (pedestrians); every split holds out
whole subjects (source groups). Each set is taught as a user would (``teach`` with ``keypoints=ClipReader()``):
every candidate (flow, body, hands and combinations, hands only where found in 10% of frames) is
cross-validated, and the cheapest within one standard error of the best is kept.

1. ``falls_adl``: the 23 GMDCSA24 clips as they are, fall (14) against daily activities (9).
2. ``still_poses``: standing / sitting / lying held still, cut from GMDCSA24's labelled time segments
   (``Subject N/*.csv``; lying = the end of a fall or "Sleeping"): windows of ``WINDOW_S`` inside a
   segment where fewer than ``STILL_SHARE`` of the picture's pixels change from frame to frame.
3. ``crowd``: each GMDCSA24 clip side by side with ``vtest.avi`` (other people walking), both at 360 px
   high, GMDCSA24 left or right by turns; labels stay the GMDCSA24 person's (fall / adl).
4. accuracy against clips per label (1, 3, 5, 10) on ``still_poses``: heads fitted on N clips per label
   from 3 subjects, scored on the 4th, several draws; L2 chosen as ``dcrn teach`` would.
5. ``camera``: a small subset of teach_eval's camera-motion set (5 labels): flow must stay the choice.

Also: ``teach`` time with an empty cache and again from it (``falls_adl``), keypoint reading per frame,
and candidate improvements, each scored as teach scores it (L2 picked on the folds it is scored on) and by
nested cross-validation (L2 picked inside the other subjects' clips: no selection bias): a wider L2 grid,
label-balanced heads (every label weighs the same in the fit), and a ``flow+body`` candidate (each set is
also taught with it among the candidates: what teach would keep then).

    .venv/bin/python -m scripts.measure.keypoint_teach --json docs/results/keypoint_teach.json  # ~20 min
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from dcrn.engine.keypoints.front import MAX_WIDTH, ClipReader
from dcrn.models.data import Sample, scan
from dcrn.models.dcrn import DCRN
from dcrn.models.frame_vector import clip_vectors
from dcrn.models.teach import FeatureCache, KeypointCache, TeachOptions, _candidate, teach, teach_config
from dcrn.models.teach_fit import L2_CHOICES, choose_l2, cv_folds, fit_softmax, frame_stats
from dcrn.models.video_io import count_frames, read_video, write_video
from scripts.measure import harness
from scripts.measure.teach_eval import CAMERA5, CLIP_FRAMES, camera_clip, sources
from tests.fixtures.paths import SHARED

GMD = SHARED / "data" / "gmdcsa24"
VTEST = "usr/share/doc/opencv-doc/examples/data/vtest.avi"  # inside the opencv-doc package
WINDOW_S = 1.2  # length of a held-still clip
TRIM_S = 0.15  # left off each end of a labelled segment (the labels' edges are approximate)
MAX_WINDOWS = 3  # per segment, so one long segment does not make a label
STILL_SHARE = 0.01  # held still: on average fewer than 1% of the pixels (at 96 x 72) change by more than
CHANGE = 10  # this many grey levels from one frame to the next (compression noise stays below it)
POSES = {"standing": "standing", "sitting": "sitting", "sleeping": "lying", "falling": "lying", "fall": "lying"}
HEIGHT = 360  # crowd: both halves at this height
SHOTS = (1, 3, 5, 10)
DRAWS = 5
WIDE_L2 = (0.1, 1.0, 10.0, 30.0, 100.0, 300.0)
LABEL = re.compile(r"([A-Za-z][A-Za-z ]*?)\s*(?:\([^)\[\]]*\)?)?\s*\[")  # "Falling (BW)[", "Falling (BW[", "Sitting ["
SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*(?:to)?\s*(\d+(?:\.\d+)?)")  # "2.6 to 6", "0.9 4.6"


# -- the sets ---------------------------------------------------------------------------------------------


def gmd_clips() -> list[tuple[Path, str, str]]:
    """(video, fall|adl, subject) of every GMDCSA24 clip here."""
    videos = sorted(GMD.glob("Subject */*/*.mp4"))
    return [(v, "fall" if v.parent.name == "Fall" else "adl", "s" + v.parts[-3].split()[-1]) for v in videos]


def write_groups(folder: Path, rows: list[tuple[str, str, str]]) -> Path:
    with open(folder / "clips.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["clip", "label", "source_group"])
        writer.writerows(rows)
    return folder


def build_falls_adl(work: Path) -> Path:
    folder = work / "falls_adl"
    rows = []
    for video, label, group in gmd_clips():
        name = f"{label}/{group}-{video.stem}.mp4"
        (folder / label).mkdir(parents=True, exist_ok=True)
        if not (folder / name).is_symlink():
            (folder / name).symlink_to(video)
        rows.append((name, label, group))
    return write_groups(folder, rows)


def segments(text: str) -> list[tuple[str, float, float]]:
    """``Fall (FW)[2.6 to 6]; Standing[1.3 to 2.2; 4 to 5]`` -> (label, start, end) in seconds, lower case."""
    marks = list(LABEL.finditer(text))
    out = []
    for k, mark in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(text)
        for a, b in SPAN.findall(text[mark.end() : end].split("]")[0]):
            if float(b) > float(a):  # a reversed span ("9.7 to 3") is a typo: left out
                out.append((mark.group(1).strip().lower(), float(a), float(b)))
    return out


def labelled_segments() -> dict[Path, list[tuple[str, float, float]]]:
    out = {}
    for table in sorted(GMD.glob("Subject */*.csv")):
        with open(table, newline="") as handle:
            for row in list(csv.reader(handle))[1:]:
                video = table.parent / table.stem / row[0].strip() if row else None
                if video is not None and video.is_file():
                    out[video] = segments(",".join(row[1:]))
    return out


def frame_motion(frames: np.ndarray) -> np.ndarray:
    """Share of pixels (at 96 x 72) whose grey level changes by more than CHANGE from the previous frame."""
    grey = [cv2.resize(f.mean(-1).astype(np.float32), (96, 72), interpolation=cv2.INTER_AREA) for f in frames]
    return np.array([0.0] + [float(np.mean(np.abs(a - b) > CHANGE)) for a, b in zip(grey[1:], grey[:-1], strict=True)])


def at_640(frames: np.ndarray) -> np.ndarray:
    if frames.shape[2] <= 640:
        return frames
    size = (640, round(frames.shape[1] * 640 / frames.shape[2]) // 2 * 2)
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def build_still_poses(work: Path) -> tuple[Path, list[dict]]:
    folder = work / "still_poses"
    rows, kept = [], []
    for video, spans in labelled_segments().items():
        frames, fps = read_video(video)
        motion = frame_motion(frames)
        size = round(WINDOW_S * fps)
        peak = float(np.argmax(motion)) / fps  # a fall: lying is what comes after its fastest moment
        subject = "s" + video.parts[-3].split()[-1]
        for label, a, b in spans:
            pose = POSES.get(label.split()[0])
            if pose is None:
                continue
            if label.startswith("fall"):
                a = max(a, peak + 0.5)
            start, stop, taken = round((a + TRIM_S) * fps), min(round((b - TRIM_S) * fps), len(frames)), 0
            while start + size <= stop and taken < MAX_WINDOWS:
                window = motion[max(start, 1) : start + size].mean()
                if window <= STILL_SHARE:
                    name = f"{pose}/{subject}-{video.parent.name}{video.stem}-{start:04d}.mp4"
                    if not (folder / name).is_file():
                        write_video(folder / name, at_640(frames[start : start + size]), fps)
                    rows.append((name, pose, subject))
                    where = {"from": str(video.relative_to(GMD)), "segment": [round(a, 2), round(b, 2)]}
                    kept.append({"clip": name, **where, "moving_share": round(float(window), 4)})
                    taken, start = taken + 1, start + size
                else:
                    start += max(1, size // 4)
    return write_groups(folder, rows), kept


def people_video(work: Path) -> Path:
    """vtest.avi from opencv-doc: installed, extracted before, or fetched now with apt-get download."""
    for root in (Path("/"), work / "opencv-doc"):
        if (root / VTEST).is_file():
            return root / VTEST
    fetch = work / "opencv-doc-deb"
    fetch.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", "opencv-doc"], cwd=fetch, check=True, capture_output=True)
    subprocess.run(["dpkg", "-x", str(next(fetch.glob("opencv-doc_*.deb"))), str(work / "opencv-doc")], check=True)
    return work / "opencv-doc" / VTEST


def at_height(frame: np.ndarray, height: int = HEIGHT) -> np.ndarray:
    width = round(frame.shape[1] * height / frame.shape[0]) // 2 * 2
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


def build_crowd(work: Path) -> tuple[Path, dict]:
    """The composed clips, and where the GMDCSA24 person's half is in each: (from, to) as shares of the width."""
    folder, others = work / "crowd", people_video(work)
    capture = cv2.VideoCapture(str(others))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    rows, turn, halves = [], {"fall": 0, "adl": 0}, {}
    for k, (video, label, group) in enumerate(gmd_clips()):
        name = f"{label}/{group}-{video.stem}.mp4"
        left, turn[label] = turn[label] % 2 == 0, turn[label] + 1  # the person's side, by turns within a label
        rows.append((name, label, group))
        source = cv2.VideoCapture(str(video))
        mine, theirs = (round(c.get(3) * HEIGHT / c.get(4)) // 2 * 2 for c in (source, capture))
        source.release()
        halves[name] = (0.0, mine / (mine + theirs)) if left else (theirs / (mine + theirs), 1.0), mine + theirs
        if (folder / name).is_file():
            continue
        frames, fps = read_video(video)
        capture.set(cv2.CAP_PROP_POS_FRAMES, (k * 97) % max(1, total - len(frames)))  # other people each time
        out = []
        for frame in frames:
            ok, bgr = capture.read()
            side = at_height(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) if ok else np.zeros((HEIGHT, 450, 3), np.uint8)
            person = at_height(frame)
            out.append(np.concatenate([person, side] if left else [side, person], axis=1))
        write_video(folder / name, out, fps)
    capture.release()
    return write_groups(folder, rows), halves


def kept_person(folder: Path, reader, halves: dict) -> dict:
    """Share of the crowd frames whose kept body (its hips) is the GMDCSA24 person, someone else, or nobody."""
    cache, counts = KeypointCache(folder / ".cache" / "features" / "keypoints"), np.zeros(3, int)
    for name, ((lo, hi), width) in halves.items():
        x = cache.clip(reader, folder / name).body[:, [23, 24], 0].mean(1) / min(MAX_WIDTH, width)  # NaN: nobody
        found, on = np.isfinite(x), (x >= lo) & (x < hi)
        counts += [np.sum(found & on), np.sum(found & ~on), np.sum(~found)]
    return dict(zip(("the_person", "someone_else", "nobody"), (counts / counts.sum()).round(3).tolist(), strict=True))


def build_camera(work: Path, per_label: int = 10, per_group: int = 2) -> Path:
    """teach_eval's camera set, 5 labels, ``per_label`` clips each: up to ``per_group`` source clips from each
    source group in turn (so folds hold out groups), the labels taken in turn."""
    folder = work / "camera"
    if (folder / "clips.csv").is_file():
        return folder
    rng, rows, taken = np.random.default_rng(0), [], {}
    for video, group in sources():
        if taken.get(group, 0) == per_group or len(rows) == per_label * len(CAMERA5):
            continue
        frames, fps = read_video(video, None, CLIP_FRAMES)
        if len(frames) < 20:
            continue
        taken[group] = taken.get(group, 0) + 1
        scale = 480 / max(frames.shape[1:3])
        if scale < 1:
            frames = np.stack([cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) for f in frames])
        motion = CAMERA5[len(rows) % len(CAMERA5)]
        name = f"{motion}/{group}-{video.stem}.mp4"
        write_video(folder / name, camera_clip(frames, motion, rng), fps or 25)
        rows.append((name, motion, group))
    return write_groups(folder, rows)


# -- teaching and evaluating ------------------------------------------------------------------------------


def reading_cost(reader: ClipReader, paths: list[Path]) -> dict:
    """ClipReader over ``paths`` one clip at a time (nothing else running in this process): ms per frame."""
    frames, wall, cpu = 0, time.monotonic(), time.process_time()
    for path in paths:
        frames += len(reader(path).body)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    return {"clips": len(paths), "frames": frames, "wall_ms": round(1000 * wall / frames, 1),
            "cpu_ms": round(1000 * cpu / frames, 1)}  # fmt: skip


def teach_set(name: str, folder: Path, reader, work: Path, kinds=None) -> dict:
    report = teach(TeachOptions(data=folder, out=work / f"{name}.pt", keypoints=reader, kinds=kinds))
    result = {key: report.to_dict()[key] for key in ("clips_per_label", "cv_split", "chance", "kept", "found")}
    clips = sum(report.clips_per_label.values())
    result.update(candidates=report.candidates, seconds=round(report.seconds, 1), clips=clips)
    print(f"\n{name}: {clips} clips {report.clips_per_label}, split by {report.cv_split}, "
          f"found {report.found}, {report.seconds:.1f} s")  # fmt: skip
    for kind, score in report.candidates.items():
        mark = "  <- kept" if kind == report.kept else ""
        print(
            f"  {kind:<16} {score['cv_accuracy']:.3f} (worst fold {score['cv_worst_fold']:.3f}, "
            f"L2 {score['l2']:g}){mark}"
        )
    return result


def memories(folder: Path, reader, kinds_list) -> tuple[dict, np.ndarray, np.ndarray, list[Sample]]:
    """Every clip's memory trajectory per candidate (as teach computes them), labels, groups, samples."""
    index = scan(folder)
    paths = [s.path for s in index.samples]
    cache = folder / ".cache" / "features"
    inputs = {"flow": FeatureCache(cache).features(DCRN(teach_config(index.classes)).eval(), paths)}
    frames = [c.frames() for c in KeypointCache(cache / "keypoints").clips(reader, paths)]
    for kind in ("hands", "body"):
        inputs[kind] = [clip_vectors(f, (kind,)) for f in frames]
    out = {"+".join(k): _candidate(k, index.classes, inputs).memories for k in kinds_list}
    return (
        out,
        np.array([s.label for s in index.samples]),
        np.array([s.group for s in index.samples]),
        list(index.samples),
    )


def balanced_softmax(memories, labels, classes: int, l2: float, mean, std):
    """``fit_softmax`` with every label weighing the same (each clip 1 / its label's clip count), not every clip."""
    counts = np.bincount(labels, minlength=classes)
    return fit_softmax(memories, labels, classes, l2, mean, std, clip_weights=1.0 / counts[np.asarray(labels)])


def fit_predict(mems, labels, train, test, classes: int, l2: float, balanced: bool = False) -> np.ndarray:
    """Last-frame predictions of ``test`` by a head fitted on ``train`` (as teach fits, or label-balanced)."""
    mean, std = frame_stats([mems[i] for i in train])
    fit = balanced_softmax if balanced else fit_softmax
    weight, bias = fit([mems[i] for i in train], labels[train], classes, l2, mean, std)
    last = np.stack([mems[i][-1] for i in test])
    return (((last - mean) / std) @ weight.T + bias).argmax(1)


def pick_l2(mems, labels, folds, classes: int, choices, balanced: bool = False):
    """``choose_l2``: the L2 of best accuracy over ``folds`` (ties: the stronger) -> (l2, predictions, per fold)."""
    if not balanced:
        return choose_l2(mems, labels, folds, classes, choices)
    scored = []
    for l2 in choices:
        pred = np.empty_like(labels)
        for test in folds:
            pred[test] = fit_predict(mems, labels, np.setdiff1d(np.arange(len(labels)), test), test, classes, l2, True)
        scored.append((round(float(np.mean(pred == labels)), 6), l2, pred))
    _, l2, pred = max(scored, key=lambda t: (t[0], t[1]))
    return l2, pred, [float(np.mean(pred[f] == labels[f])) for f in folds]


def inner_l2(mems, labels, samples, train, classes: int, choices, balanced: bool = False) -> float:
    """The L2 `dcrn teach` would choose on the training clips alone (its own folds: by subject when it can)."""
    folds, _ = cv_folds([samples[i] for i in train], labels[train])
    if not folds:
        return 1.0
    return pick_l2([mems[i] for i in train], labels[train], folds, classes, choices, balanced)[0]


def scores(pred, labels, per_fold) -> dict:
    return {"accuracy": round(float(np.mean(pred == labels)), 3), "worst_fold": round(min(per_fold), 3)}


def variant(mems, labels, groups, samples, classes: int, choices, balanced: bool) -> dict:
    """``teach``: L2 picked on the same folds it is scored on (what teach reports); ``nested``: L2 picked inside
    the other subjects' clips for each held-out subject (no selection bias)."""
    folds, _ = cv_folds(samples, labels)
    l2, pred, per_fold = pick_l2(mems, labels, folds, classes, choices, balanced)
    out = {"teach": {**scores(pred, labels, per_fold), "l2": l2}}
    pred, per_fold = np.empty_like(labels), []
    for held in sorted(set(groups)):
        test, train = np.flatnonzero(groups == held), np.flatnonzero(groups != held)
        l2 = inner_l2(mems, labels, samples, train, classes, choices, balanced)
        pred[test] = fit_predict(mems, labels, train, test, classes, l2, balanced)
        per_fold.append(float(np.mean(pred[test] == labels[test])))
    return {**out, "nested": scores(pred, labels, per_fold)}


def improvements(folder: Path, reader) -> dict:
    """As teach (3 L2 strengths), a wider L2 grid, label-balanced heads; flow, body and flow+body."""
    mems, labels, groups, samples = memories(folder, reader, (("flow",), ("body",), ("flow", "body")))
    classes, out = len(set(labels.tolist())), {}
    recipes = {"as_teach": (L2_CHOICES, False), "wide_l2": (WIDE_L2, False), "balanced": (L2_CHOICES, True)}
    for name, m in mems.items():
        out[name] = {k: variant(m, labels, groups, samples, classes, *v) for k, v in recipes.items()}
        shown = [
            f"{k} {v['teach']['accuracy']:.3f} (nested {v['nested']['accuracy']:.3f})" for k, v in out[name].items()
        ]
        print(f"  {name:<10} " + ", ".join(shown))
    return out


def shots(folder: Path, reader) -> dict:
    """Accuracy against clips per label: N per label from 3 subjects, tested on the 4th, DRAWS draws."""
    mems, labels, groups, samples = memories(folder, reader, (("flow",), ("body",), ("flow", "body")))
    classes, result = len(set(labels.tolist())), {}
    result["pool"] = {g: np.bincount(labels[groups != g], minlength=classes).tolist() for g in sorted(set(groups))}
    for name, m in mems.items():
        result[name] = {}
        for n in SHOTS:
            per_draw, per_split, per_subject = [], [], {g: [] for g in sorted(set(groups))}
            for draw in range(DRAWS):
                rng, pred = np.random.default_rng(1000 * n + draw), np.empty_like(labels)
                for held in sorted(set(groups)):
                    test, pool = np.flatnonzero(groups == held), np.flatnonzero(groups != held)
                    train = np.concatenate([
                        rng.choice(pool[labels[pool] == c], min(n, int(np.sum(labels[pool] == c))), replace=False)
                        for c in range(classes)
                    ])  # fmt: skip
                    l2 = 1.0 if n == 1 else inner_l2(m, labels, samples, train, classes, L2_CHOICES)
                    pred[test] = fit_predict(m, labels, train, test, classes, l2)
                    score = float(np.mean(pred[test] == labels[test]))
                    per_split.append(score)
                    per_subject[held].append(score)
                per_draw.append(float(np.mean(pred == labels)))
            result[name][n] = {
                "mean": round(float(np.mean(per_draw)), 3),
                "worst_subject": round(min(float(np.mean(v)) for v in per_subject.values()), 3),
                "worst_split": round(min(per_split), 3),
                "draws": [round(v, 3) for v in per_draw],
            }
            r = result[name][n]
            print(
                f"  {name:<9} {n:>2} clips/label: {r['mean']:.3f} (worst subject {r['worst_subject']:.3f}, "
                f"worst split {r['worst_split']:.3f})"
            )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=harness.RUNS / "keypoint-teach", help="where the sets are made")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--warm", action="store_true", help="keep falls_adl's cache (no cold teach timing)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    started, results = time.monotonic(), {"machine": harness.machine_info(("torch", "openvino"))}
    results["load_average_start"] = harness.load_average()
    reader = ClipReader()

    falls = build_falls_adl(args.work)
    if not args.warm:
        shutil.rmtree(falls / ".cache", ignore_errors=True)
    cold = teach_set("falls_adl", falls, reader, args.work)
    warm = teach_set("falls_adl", falls, reader, args.work)
    results["falls_adl"] = cold
    frames = sum(count_frames(v) for v, _, _ in gmd_clips())
    results["teach_seconds"] = {
        "cold": None if args.warm else cold["seconds"],
        "warm": warm["seconds"],
        "frames": frames,
    }
    results["keypoint_reading"] = reading_cost(reader, [v for v, _, _ in gmd_clips()][::4])
    print(f"keypoint reading, one clip at a time: {results['keypoint_reading']}")
    print("\nfalls_adl, candidate improvements (accuracy):")
    results["falls_adl"]["improvements"] = improvements(falls, reader)

    poses, windows = build_still_poses(args.work)
    results["still_poses"] = teach_set("still_poses", poses, reader, args.work)
    results["still_poses"]["windows"] = windows
    print("\nstill_poses, candidate improvements (accuracy):")
    results["still_poses"]["improvements"] = improvements(poses, reader)
    print("\nstill_poses, accuracy against clips per label (other subjects' clips):")
    results["still_poses"]["shots"] = shots(poses, reader)

    crowd, halves = build_crowd(args.work)
    results["crowd"] = teach_set("crowd", crowd, reader, args.work)
    results["crowd"]["kept_body_is"] = kept_person(crowd, reader, halves)
    print(f"  frames whose kept body is: {results['crowd']['kept_body_is']}")
    results["crowd"]["composed"] = (
        f"each GMDCSA24 clip beside opencv-doc's vtest.avi (pedestrians, 10 fps read frame by frame at the clip's "
        f"rate, a different start each clip), both scaled to {HEIGHT} px high; the person left or right by turns "
        "within each label; the keypoint reader scales the frame to 640 px wide"
    )
    print("\ncrowd, candidate improvements (accuracy):")
    results["crowd"]["improvements"] = improvements(crowd, reader)

    results["camera"] = teach_set("camera", build_camera(args.work), reader, args.work)
    results["camera"]["flow_kept"] = results["camera"]["kept"] == "flow"
    results["load_average_end"] = harness.load_average()
    results["seconds"] = round(time.monotonic() - started)
    print(f"\ndone in {results['seconds']} s")
    if args.json:
        harness.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    harness.run(main)
