"""``dcrn teach``: learn your own actions from a few recorded clips, with no other flags required."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from pathlib import Path

from dcrn.app.argtypes import positive_int, thread_count, writable_file, writable_folder

log = logging.getLogger("dcrn.teach")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="a `dcrn record` data set (or any class-folder set)")
    parser.add_argument("--out", required=True, type=writable_file, help="the checkpoint to write")
    parser.add_argument("--cache", type=writable_folder, help="per-clip feature cache (default DATA/.cache/features)")
    parser.add_argument("--json", type=writable_file, help="also write the report (accuracy, confusion) as JSON here")
    parser.add_argument(
        "--min-clips",
        type=positive_int,
        default=2,
        help="clips needed per label (default 2; 1 trains without an estimate)",
    )
    parser.add_argument("--threads", type=thread_count, default=1, help="CPU threads (default 1)")
    parser.add_argument(
        "--flow-only",
        action="store_true",
        help="learn from the picture's motion only; do not look for hands and bodies (faster)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    import torch

    from dcrn.models.progress import Progress
    from dcrn.models.teach import TeachOptions, teach

    torch.set_num_threads(max(1, args.threads))
    bars: dict[str, Progress] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if args.no_progress:
            return
        bar = bars.get(stage)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[stage] = Progress(total, stage)
        bar.count = done - 1
        bar.update()

    from dcrn.engine.keypoints import clip_reader

    keypoints = None if args.flow_only else clip_reader(args.threads)
    report = teach(TeachOptions(data=args.data, out=args.out, cache_dir=args.cache, progress=progress,
                                min_clips=args.min_clips, keypoints=keypoints))  # fmt: skip
    for bar in bars.values():
        bar.close()
    print(report.summary())
    warning = report.warning()
    if warning:  # one block on stderr, after the report; the model is still written (the user decides)
        lines = [line for para in warning.split("\n") for line in textwrap.wrap(para, 96)]
        print("\n".join(["", "WARNING: " + lines[0], *("         " + line for line in lines[1:]), ""]),
              file=sys.stderr, flush=True)  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0
