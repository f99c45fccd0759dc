"""``dcrn record``: record labelled clips from a camera, stream, file or ``synthetic:`` into a teach data set.

    dcrn record --source 0 --out my-actions --label wave --count 5 --seconds 3
    dcrn record --source talk.mp4 --out my-actions --label nod --cut 12.5:15 --cut 40:42.5

Live sources count down before each clip; files are cut (``--cut IN:OUT``, seconds, repeatable) or split
into consecutive clips. Progress goes to stderr; stdout lists the clips saved, one path per line,
relative to the data set. The data set folder is created when it does not exist (with the background
label ``nothing``, unless ``--no-background``). See docs/TEACH.md.
"""

from __future__ import annotations

import argparse
import logging
import sys

from dcrn.app.argtypes import non_negative_seconds, positive_int, seconds, writable_folder
from dcrn.app.cmd_run import add_credentials_argument

log = logging.getLogger("dcrn.record")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source", required=True, metavar="URI", help="camera index, rtsp:// or http(s):// URL, video file, synthetic:"
    )
    add_credentials_argument(parser)
    parser.add_argument("--out", required=True, type=writable_folder, metavar="DATASET", help="teach data set folder")
    parser.add_argument("--label", required=True, help="the action these clips show (a new label is added)")
    parser.add_argument("--seconds", type=seconds, default=3.0, metavar="S", help="length of each clip (default 3)")
    parser.add_argument("--count", type=positive_int, default=1, metavar="N", help="clips to record (default 1)")
    parser.add_argument(
        "--countdown",
        type=non_negative_seconds,
        default=3.0,
        metavar="S",
        help="seconds of countdown before each clip of a live source (default 3; files: none)",
    )
    parser.add_argument(
        "--cut",
        action="append",
        default=[],
        metavar="IN:OUT",
        help="cut a clip from IN to OUT seconds of a video file source (repeatable); replaces --count/--seconds",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=10.0,
        metavar="S",
        help="network streams: seconds to wait for the first frame (default 10)",
    )
    parser.add_argument(
        "--no-background", action="store_true", help="do not add the 'nothing' label when creating the data set"
    )


def main(args: argparse.Namespace) -> int:
    from dcrn.engine.recorder import check_session, parse_cut, record_clips
    from dcrn.engine.sources.base import SourceOptions
    from dcrn.engine.sources.credentials import apply_credentials
    from dcrn.engine.sources.factory import open_source
    from dcrn.models.errors import ConfigError, DataError
    from dcrn.models.teach_data import TeachDataset, validate_label

    # Everything that can be refused is refused before the data set folder is created.
    if not args.timeout > 0:
        raise ConfigError(f"--timeout must be positive, got {args.timeout}")
    check_session(args.seconds, args.count, args.countdown)
    cuts = [parse_cut(text) for text in args.cut]
    label = validate_label(args.label)

    def status(text: str) -> None:
        print(f"dcrn record: {text}", file=sys.stderr, flush=True)

    source_uri = apply_credentials([args.source], args.credentials)[0]
    with open_source(source_uri, options=SourceOptions(timeout_s=args.timeout)) as source:
        dataset = TeachDataset.open_or_create(args.out, background=not args.no_background)
        clips = record_clips(
            source,
            dataset,
            label,
            seconds=args.seconds,
            count=args.count,
            countdown=args.countdown,
            on_status=status,
            cuts=cuts or None,
        )
    for clip in clips:
        print(clip.path, flush=True)
    counts = ", ".join(f"{name}: {n}" for name, n in dataset.counts().items())
    status(f"{len(clips)} clip(s) of {label!r} saved in {dataset.root} ({counts})")
    if not clips:
        raise DataError("no clip was saved: the source ended before a whole clip could be recorded")
    return 0
