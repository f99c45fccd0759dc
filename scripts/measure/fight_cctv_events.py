"""Event-level evaluation of the fight-cctv cross-validation folds on continuous streams.

Clip accuracy (``python -m dcrn.models.crossval score``) scores each held-out clip from a fresh state at
its last frame. A camera is different: the state is never reset between scenes, and what a user sees are
``action_started`` / ``action_ended`` events. This script measures that, per fold:

1. The fold's held-out clips (the groups its checkpoint records, :func:`dcrn.models.crossval.held_out_clips`)
   are put in one order, with a fixed seed: fight and noFight clips alternate while both are left, and
   the next clip comes from another source group than the previous one wherever the fold allows it.
2. Their cached per-frame features are concatenated into one stream and the fold's model steps through it
   frame by frame from one fresh state, never reset between clips (as ``dcrn run`` steps a camera; the
   cell on cached encoder features is the step graph's computation, to float rounding).
3. Every frame's logits go through the engine's own postprocessing (``StreamPostprocessor`` with
   ``PostprocessConfig()``, the defaults of ``dcrn run``: EMA 0.3, on 0.6 / off 0.4, 3 frames); a
   running action is closed at the end of the stream, as ``dcrn run`` does when a stream ends.
4. ``fight`` events are matched to fight clips: an event is a **hit** when it overlaps a fight clip, a
   fight clip is **found** when an event overlaps it. Event precision = hits / events, recall = found /
   fight clips. **Delay** of a found clip: from its first frame to the first frame an event is running in
   it, over the found clips where a new event starts; a clip that an event running since an earlier clip
   runs into is found but ``carried``, with no delay of its own.
   Overlap is lenient (one event over the whole stream would score precision 1 and recall 1), so the
   frames are counted too: the fraction of fight and of noFight clips' frames inside a fight event, the
   fraction of event frames that lie on fight clips, and the clips half covered by events. Also: false
   events per minute of noFight footage, and how long events run on after a fight clip ends.

``--reset-between-clips`` gives a fresh model state at every clip (the postprocessing still runs on), for
comparison: what the state carried across the cuts between clips costs.

``--class-threshold fight=P`` sets the fight class's start threshold as ``dcrn run --class-threshold`` does
(its end threshold follows, 0.2 below); ``--sweep P1,P2,...`` scores each of those thresholds in one run
and writes their summaries side by side: the trade between missed fights and false alarms a user chooses
from, measured on held-out sources.

Times come from each clip's own frame rate (pts advance by 1 / fps per frame).

Usage (after ``scripts/train-fight-cctv --cv``, which writes RUNS/cv/fold{1..5}.last.pt)::

    .venv/bin/python -m scripts.measure.fight_cctv_events          # runs/fight-cctv -> runs/fight-cctv/events.json
    .venv/bin/python -m scripts.measure.fight_cctv_events --reset-between-clips   # -> runs/fight-cctv/events-reset.json
    .venv/bin/python -m scripts.measure.fight_cctv_events --runs runs/try --seed 1 --json runs/try/events-s1.json
    .venv/bin/python -m scripts.measure.fight_cctv_events --sweep 0.5,0.6,0.7,0.8,0.9   # -> RUNS/events-sweep.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from pathlib import Path

import numpy as np
import torch

from dcrn.app.cmd_run import class_thresholds
from dcrn.engine.frames import ACTION_ENDED, ACTION_STARTED, Frame
from dcrn.engine.postprocess import PostprocessConfig, StreamPostprocessor
from dcrn.models.crossval import held_out_clips
from dcrn.models.errors import ConfigError
from dcrn.models.video_io import read_video
from scripts.measure import harness
from tests.fixtures.paths import SHARED

log = logging.getLogger("fight_cctv_events")
TARGET = "fight"


def stream_order(labels: list[int], groups: list[str], seed: int) -> list[int]:
    """Clip indices in stream order: classes alternate while both are left, and the next clip is from
    another source group than the previous one where any such clip of the wanted class is left."""
    rng = np.random.default_rng(seed)
    pools: dict[int, list[int]] = {}
    for i in rng.permutation(len(labels)).tolist():
        pools.setdefault(labels[i], []).append(i)
    order: list[int] = []
    want = int(rng.choice(sorted(pools)))
    while any(pools.values()):
        if not pools.get(want):
            want = next(c for c, pool in pools.items() if pool)
        pool = pools[want]
        previous = groups[order[-1]] if order else None
        pick = next((i for i in pool if groups[i] != previous), pool[0])
        pool.remove(pick)
        order.append(pick)
        others = [c for c, p in pools.items() if p and c != want]
        want = others[0] if others else want
    return order


def _fps(path: Path) -> float:
    _, fps = read_video(path, 16, max_frames=1)
    return fps if fps > 0 else 25.0


@torch.no_grad()
def fold_events(
    checkpoint: Path,
    data: Path,
    feature_cache: Path | None,
    seed: int,
    config: PostprocessConfig,
    *,
    reset_between_clips: bool = False,
) -> dict:
    model, meta, clips, store = held_out_clips(checkpoint, data, feature_cache=feature_cache)
    labels = [s.label for s in clips.samples]
    groups = [s.group for s in clips.samples]
    order = stream_order(labels, groups, seed)
    target = model.config.class_names.index(TARGET)

    segments = []  # per clip in stream order: first frame, end frame (exclusive), pts of both
    features, pts = [], []
    frame, t = 0, 0.0
    for i in order:
        f = store.load(i)[0]  # (T_i, F)
        step = 1.0 / _fps(clips.samples[i].path)
        segments.append(
            {
                "clip": str(clips.samples[i].path.relative_to(data)),
                "group": groups[i],
                "label": model.config.class_names[labels[i]],
                "start": frame,
                "end": frame + len(f),
                "start_s": round(t, 4),
            }
        )
        features.append(f)
        pts.extend(t + step * np.arange(len(f)))
        frame, t = frame + len(f), t + step * len(f)
    stream = torch.from_numpy(np.concatenate(features)).float()[None]  # (1, T, F)
    if reset_between_clips:  # the comparison: a fresh model state at every clip (postprocessing continues)
        logits = torch.cat([model.forward_features(torch.from_numpy(f).float()[None])[0] for f in features], 1)
    else:
        logits, _ = model.forward_features(stream)  # (1, T, C): one state from the first frame to the last

    post = StreamPostprocessor(tuple(model.config.class_names), config)
    name = f"fold{checkpoint.stem.split('.')[0].removeprefix('fold')}"
    events: list[dict] = []
    image = np.zeros((1, 1, 3), np.uint8)  # the postprocessor reads only the frame's number and times
    for k in range(stream.shape[1]):
        record = Frame(stream=name, seq=k, pts=float(pts[k]), image=image, wall=float(pts[k]))
        events += post.update(logits[0, k], record)[1]
    events += post.reset()  # the stream ends: a running action ends at the last frame

    probs = logits[0].softmax(-1)[:, target].numpy()
    return {
        "checkpoint": _shown(checkpoint),
        "val_groups": list(meta["trained_with"]["val_groups"]),
        "clips": len(segments),
        "fight_clips": sum(s["label"] == TARGET for s in segments),
        "frames": int(stream.shape[1]),
        "duration_s": round(float(pts[-1]), 2),
        "same_group_neighbours": sum(a["group"] == b["group"] for a, b in itertools.pairwise(segments)),
        **score_events(event_intervals(events), segments, np.asarray(pts), probs),
        "segments": segments,
    }


def event_intervals(events: list[dict]) -> list[tuple[int, int]]:
    """The postprocessor's event records -> ``fight`` actions as [start, end) frame intervals."""
    intervals, started = [], None
    for e in events:
        if e["label"] != TARGET:
            continue
        if e["event"] == ACTION_STARTED:
            started = e["frame"]
        elif e["event"] == ACTION_ENDED and started is not None:
            intervals.append((started, max(e["frame"], started + 1)))
            started = None
    return intervals


def score_events(intervals: list[tuple[int, int]], segments: list[dict], pts: np.ndarray, probs: np.ndarray) -> dict:
    """Fight events (frame intervals) against the stream's clips (``segments``: label, start, end frames),
    with every frame's time ``pts`` and fight probability ``probs``: the figures of the module notes."""
    fights = [s for s in segments if s["label"] == TARGET]
    quiet = [s for s in segments if s["label"] != TARGET]
    overlaps = [[s for s in fights if a < s["end"] and b > s["start"]] for a, b in intervals]
    hits = sum(bool(o) for o in overlaps)
    delays, found, carried, overhang = [], 0, 0, []
    for s in fights:
        running = [(a, b) for a, b in intervals if a < s["end"] and b > s["start"]]
        if not running:
            continue
        first = max(min(a for a, _ in running), s["start"])
        found += 1
        if min(a for a, _ in running) < s["start"]:
            carried += 1  # an event from before the clip runs into it: no delay to measure
        else:
            delays.append(float(pts[first] - pts[s["start"]]))
        last_end = max(b for _, b in running)
        if last_end > s["end"]:
            overhang.append(float(pts[min(last_end, len(pts) - 1)] - pts[s["end"] - 1]))
    active = np.zeros(len(pts), bool)
    for a, b in intervals:
        active[a:b] = True
    covered = {id(s): float(active[s["start"] : s["end"]].mean()) for s in segments}
    on_fight = sum(int(active[s["start"] : s["end"]].sum()) for s in fights)
    nofight_s = sum(pts[s["end"] - 1] - pts[s["start"]] for s in quiet)
    false_events = len(intervals) - hits
    return {
        "events": len(intervals),
        "hits": hits,
        "false_events": false_events,
        "found": found,
        "precision": round(hits / len(intervals), 4) if intervals else None,
        "recall": round(found / len(fights), 4) if fights else None,
        "false_events_per_min_nofight": round(false_events / (nofight_s / 60), 3) if nofight_s > 0 else None,
        "delay_s_mean": round(float(np.mean(delays)), 3) if delays else None,
        "delay_s_median": round(float(np.median(delays)), 3) if delays else None,
        "delay_s_max": round(float(np.max(delays)), 3) if delays else None,
        "carried": int(carried),
        "overhang_s_mean": round(float(np.mean(overhang)), 3) if overhang else None,
        "event_frames_on_fight_clips": round(on_fight / active.sum(), 4) if active.any() else None,
        "fight_frames_flagged": round(_fraction(active, fights), 4),
        "nofight_frames_flagged": round(_fraction(active, quiet), 4),
        "fight_clips_half_flagged": _mean([covered[id(s)] >= 0.5 for s in fights]),
        "nofight_clips_half_flagged": _mean([covered[id(s)] >= 0.5 for s in quiet]),
        "mean_fight_prob": {
            "fight_clips": _mean([probs[s["start"] : s["end"]].mean() for s in fights]),
            "nofight_clips": _mean([probs[s["start"] : s["end"]].mean() for s in quiet]),
            "nofight_clips_after_a_fight_clip": _mean_prob(probs, segments, TARGET),
            "nofight_clips_after_a_nofight_clip": _mean_prob(probs, segments, None),
        },
        "intervals": [[a, b] for a, b in intervals],
    }


def _shown(path: Path) -> str:
    """A path as the JSON shows it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(harness.REPO)) if path.is_relative_to(harness.REPO) else str(path)


def _mean_prob(probs: np.ndarray, segments: list[dict], before: str | None) -> float | None:
    """Mean fight probability over the noFight clips that follow a fight clip (``before`` = TARGET) or a
    noFight clip (None): how much of a fight the state carries into the next scene."""
    return _mean(
        [
            probs[b["start"] : b["end"]].mean()
            for a, b in itertools.pairwise(segments)
            if b["label"] != TARGET and (a["label"] == TARGET) == (before == TARGET)
        ]
    )


def _mean(values: list) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None


def _fraction(active: np.ndarray, segments: list[dict]) -> float:
    """Fraction of the segments' frames that lie inside an event (``active``: per frame of the stream)."""
    inside = [active[s["start"] : s["end"]] for s in segments]
    return float(np.concatenate(inside).mean()) if inside else 0.0


def summarize(folds: list[dict]) -> dict:
    def values(key):
        return np.array([f[key] for f in folds if f[key] is not None], float)

    out = {}
    for key, worst in [
        ("precision", min),
        ("recall", min),
        ("false_events_per_min_nofight", max),
        ("delay_s_mean", max),
        ("delay_s_median", max),
        ("event_frames_on_fight_clips", min),
        ("fight_frames_flagged", min),
        ("nofight_frames_flagged", max),
        ("fight_clips_half_flagged", min),
        ("nofight_clips_half_flagged", max),
    ]:
        v = values(key)
        out[key] = {"mean": round(float(v.mean()), 4), "std": round(float(v.std()), 4)}
        out[key]["worst"] = round(float(worst(v)), 4)
    events, hits = sum(f["events"] for f in folds), sum(f["hits"] for f in folds)
    fights, found = sum(f["fight_clips"] for f in folds), sum(f["found"] for f in folds)
    out["pooled"] = {
        "events": events,
        "hits": hits,
        "precision": round(hits / events, 4) if events else None,
        "fight_clips": fights,
        "found": found,
        "recall": round(found / fights, 4) if fights else None,
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=harness.RUNS / "fight-cctv", help="holds cv/fold{1..5}.last.pt")
    parser.add_argument("--data", type=Path, default=SHARED / "data/fight-cctv")
    parser.add_argument("--feature-cache", type=Path, default=harness.RUNS / "fight-cctv/features")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="seed of the clip order in each stream")
    parser.add_argument(
        "--reset-between-clips",
        action="store_true",
        help="for comparison: a fresh model state at every clip (the postprocessing still runs on)",
    )
    parser.add_argument(
        "--class-threshold",
        action="append",
        default=[],
        metavar="LABEL=P",
        help="a class's start threshold, as dcrn run --class-threshold (repeatable)",
    )
    parser.add_argument("--sweep", default="", metavar="P1,P2,...", help="score each of these fight start thresholds")
    parser.add_argument("--json", type=Path, dest="json_path", help="default RUNS/events[-seedN][-reset].json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("dcrn").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    try:  # every setting checked before any work: a bad one is a one-line error
        thresholds = class_thresholds(args.class_threshold)
        sweep = [float(v) for v in args.sweep.split(",")] if args.sweep else []
        configs = [PostprocessConfig(class_thresholds=thresholds | {TARGET: p}) for p in sweep]
        config = PostprocessConfig(class_thresholds=thresholds)
    except ConfigError as exc:  # a ValueError too: first
        parser.error(str(exc))
    except ValueError:
        parser.error(f"--sweep wants comma-separated probabilities, got {args.sweep!r}")
    missing = [f"fold{k}" for k in range(1, args.folds + 1) if not (args.runs / f"cv/fold{k}.last.pt").is_file()]
    if missing:
        parser.error(f"no {args.runs}/cv/{missing[0]}.last.pt: run scripts/train-fight-cctv --cv first")
    name = "events" + ("-sweep" if args.sweep else "")
    name += (f"-seed{args.seed}" if args.seed else "") + ("-reset" if args.reset_between_clips else "")
    out = args.json_path or args.runs / f"{name}.json"
    if not sweep:
        result = evaluate(args, config)
    else:
        result = []
        for p, each_config in zip(sweep, configs, strict=True):
            log.info("fight start threshold %.2f:", p)
            each = evaluate(args, each_config)
            each["folds"] = [{k: v for k, v in f.items() if k != "segments"} for f in each["folds"]]  # the scores
            result.append(each)
        for p, each in zip(sweep, result, strict=True):
            s = each["summary"]
            log.info(
                "fight %.2f: precision %.3f (worst %.3f), recall %.3f (worst %.3f), %.2f false events / min, "
                "noFight frames in events %.3f, delay %.2f s",
                p,
                s["precision"]["mean"],
                s["precision"]["worst"],
                s["recall"]["mean"],
                s["recall"]["worst"],
                s["false_events_per_min_nofight"]["mean"],
                s["nofight_frames_flagged"]["mean"],
                s["delay_s_mean"]["mean"],
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=list) + "\n")
    log.info("wrote %s", out)
    return 0


def evaluate(args: argparse.Namespace, config: PostprocessConfig) -> dict:
    """Every fold's stream with ``config``: the folds' results and their summary."""
    folds = []
    for k in range(1, args.folds + 1):
        path = args.runs / f"cv/fold{k}.last.pt"
        result = fold_events(
            path, args.data, args.feature_cache, args.seed, config, reset_between_clips=args.reset_between_clips
        )
        folds.append(result)
        log.info(
            "fold %d: %d clips (%d fight), %.0f s; %d events, precision %s, recall %s, delay mean %s s, "
            "%s false events / min of noFight",
            k,
            result["clips"],
            result["fight_clips"],
            result["duration_s"],
            result["events"],
            result["precision"],
            result["recall"],
            result["delay_s_mean"],
            result["false_events_per_min_nofight"],
        )
    summary = {
        "postprocess": vars(config),
        "order_seed": args.seed,
        "reset_between_clips": args.reset_between_clips,
        "summary": summarize(folds),
        "folds": folds,
    }
    s = summary["summary"]
    log.info(
        "precision %.3f ± %.3f (worst %.3f), recall %.3f ± %.3f (worst %.3f), delay %.2f s (worst fold %.2f s)",
        s["precision"]["mean"],
        s["precision"]["std"],
        s["precision"]["worst"],
        s["recall"]["mean"],
        s["recall"]["std"],
        s["recall"]["worst"],
        s["delay_s_mean"]["mean"],
        s["delay_s_mean"]["worst"],
    )
    log.info(
        "frames inside fight events: %.3f of fight clips, %.3f of noFight clips; %.3f of event frames on fights",
        s["fight_frames_flagged"]["mean"],
        s["nofight_frames_flagged"]["mean"],
        s["event_frames_on_fight_clips"]["mean"],
    )
    return summary


if __name__ == "__main__":
    harness.run(main)
