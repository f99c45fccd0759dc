"""``dcrn eval``: accuracy, confusion, accuracy vs frames observed, streaming accuracy and detection delay."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from dcrn.app.argtypes import non_negative_int, thread_count, writable_file, writable_folder

log = logging.getLogger("dcrn.eval")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="class folders and/or streams with .labels.csv")
    parser.add_argument("--model", default="default", help="checkpoint path or shipped model name (default)")
    parser.add_argument("--json", type=writable_file, dest="json_path", help="write the metrics to this JSON file")
    parser.add_argument("--report", type=writable_folder, help="write a Markdown report with figures to this folder")
    parser.add_argument("--max-frames", type=non_negative_int, default=0, help="frames read per clip (default: all)")
    parser.add_argument(
        "--baseline-train",
        type=Path,
        help="training clips to fit the order-agnostic baseline on (default: k-fold on the evaluated clips)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the order-agnostic baseline")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--threads", type=thread_count, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (without a terminal: no log line every 30 s)"
    )


def _keypoint_vectors(model, path, max_frames):
    """The engine's keypoint front end, for models taught on hands or bodies (imported only for them)."""
    from dcrn.engine.keypoints.front import clip_inputs

    return clip_inputs(model, path, max_frames)


def main(args: argparse.Namespace) -> int:
    from dcrn.models.evaluate import EvalOptions, evaluate
    from dcrn.models.report import write_report

    result = evaluate(
        EvalOptions(
            data=args.data,
            model=args.model,
            max_frames=args.max_frames,
            baseline=not args.no_baseline,
            baseline_train=args.baseline_train,
            device=args.device,
            threads=args.threads,
            progress=not args.no_progress,
            vectors=_keypoint_vectors,
        )
    )
    summary = {k: result.get(k) for k in ("top1", "top5", "num_clips", "per_frame_accuracy", "mean_delay_s")}
    if "baseline" in result:
        summary["baseline_top1"] = result["baseline"]["top1"]
    if result.get("wrong") is not None:
        summary["wrong_clips"] = len(result["wrong"])  # listed in --json and --report
    print(json.dumps({k: v for k, v in summary.items() if v is not None}))
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(result, indent=2) + "\n")
        log.info("wrote %s", args.json_path)
    if args.report:
        log.info("wrote %s", write_report(result, args.report))
    return 0
