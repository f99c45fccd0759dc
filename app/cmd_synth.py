"""``dcrn synth``: write a synthetic action data set (folder per class) and/or a continuous stream."""

from __future__ import annotations

import argparse
import logging

from dcrn.app.argtypes import (
    frame_rate,
    non_negative_int,
    non_negative_seconds,
    positive_int,
    probability,
    seconds,
    seed,
    writable_folder,
)

log = logging.getLogger("dcrn.synth")

MAX_SIZE = 4096  # pixels, each way


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=writable_folder, help="output folder")
    parser.add_argument("--seed", type=seed, default=0, help="base seed; different seeds share no clip (default 0)")
    parser.add_argument(
        "--clips-per-class",
        type=non_negative_int,
        default=30,
        help="clips of each of the 10 classes (default 30; 0: none)",
    )
    parser.add_argument("--clip-frames", type=positive_int, default=48, help="frames per clip (default 48 = 1.6 s)")
    parser.add_argument(
        "--stream",
        type=non_negative_seconds,
        default=0.0,
        metavar="SECONDS",
        help="also write a continuous stream of this many seconds with per-frame labels (default: none)",
    )
    parser.add_argument("--streams", type=positive_int, default=1, help="number of such streams (default 1)")
    parser.add_argument(
        "--segment",
        type=seconds,
        nargs=2,
        default=(2.0, 5.0),
        metavar=("MIN", "MAX"),
        help="stream segment length range in seconds (default 2 5)",
    )
    parser.add_argument(
        "--scene-change",
        type=probability,
        default=0.15,
        help="chance a stream segment starts a new scene (default 0.15)",
    )
    parser.add_argument("--size", default="240x320", help="frame size HEIGHTxWIDTH (default 240x320)")
    parser.add_argument("--fps", type=frame_rate, default=30.0, help="frames per second (default 30)")


def main(args: argparse.Namespace) -> int:
    from dcrn.models.errors import ConfigError
    from dcrn.models.synth_dataset import SynthOptions, write_synthetic

    try:
        height, width = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size must look like 240x320 (height x width), got {args.size!r}") from None
    if not (16 <= height <= MAX_SIZE and 16 <= width <= MAX_SIZE):
        raise ConfigError(f"--size must be 16 to {MAX_SIZE} pixels each way, got {args.size!r}")
    options = SynthOptions(
        out=args.out,
        seed=args.seed,
        clips_per_class=args.clips_per_class,
        clip_frames=args.clip_frames,
        stream_s=args.stream,
        streams=args.streams,
        segment_s=tuple(args.segment),
        scene_change=args.scene_change,
        size=(height, width),
        fps=args.fps,
    )
    summary = write_synthetic(options)
    log.info(
        "wrote %d clips and %d stream(s) to %s in %.0f s",
        summary["clips"],
        len(summary["streams"]),
        args.out,
        summary["seconds"],
    )
    return 0
