"""``dcrn demo``: the shipped model on the built-in synthetic action stream, live predictions on stdout.

No camera, GPU or download is needed. ``--gui`` opens the desktop window on the same stream instead.
"""

from __future__ import annotations

import argparse
import sys

from dcrn.app.argtypes import frame_rate, seed
from dcrn.app.cmd_run import add_engine_arguments, pipeline_config, quiet_native_logs, run_pipeline

DEMO_SINK = "stdout?format=text&every=10"  # a line every 10 frames (3 a second), every event, stats


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gui", action="store_true", help="open the desktop window instead of printing")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the synthetic stream (default 0)")
    parser.add_argument("--fps", type=frame_rate, default=30.0, help="frame rate of the synthetic stream (default 30)")
    add_engine_arguments(parser, model_help="checkpoint path or shipped model name (default: the shipped 'default')")
    parser.add_argument(
        "--sink",
        metavar="SPEC",
        action="append",
        help=f"where records go, repeatable (default: {DEMO_SINK}; see dcrn run --help)",
    )


def source_uri(args: argparse.Namespace) -> str:
    return f"synthetic:?seed={args.seed}&fps={args.fps:g}"


def main(args: argparse.Namespace) -> int:
    if args.gui:
        return _gui(args)
    quiet_native_logs(args)
    from dcrn.engine.pipeline import Pipeline
    from dcrn.engine.sinks.factory import parse_sink

    sinks = [parse_sink(spec) for spec in args.sink or [DEMO_SINK]]
    config = pipeline_config(args, [source_uri(args)], pace=True, loop=False, timeout_s=10.0)
    return run_pipeline(Pipeline(config, sinks))


def _gui(args: argparse.Namespace) -> int:
    try:
        from dcrn.app.gui.main import run_gui
    except ImportError as exc:
        print(
            f"dcrn demo: error: the desktop window is not available ({exc}); "
            "install it with pip install 'dcrn-live[gui]', or run dcrn demo without --gui",
            file=sys.stderr,
        )
        return 2
    return run_gui(source_uri(args), args.model, backend=args.backend, device=args.device)
