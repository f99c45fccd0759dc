"""``dcrn gui``: the desktop window with live video and prediction overlays."""

from __future__ import annotations

import argparse

from dcrn.app.argtypes import bounded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        metavar="URI",
        help="start on this source: a camera index, rtsp:// or http(s):// URL, video file or 'synthetic:' "
        "(default: the last source used, or the demo stream)",
    )
    parser.add_argument(
        "--model", metavar="CKPT", help="checkpoint path or shipped model name (default: the last used, or 'default')"
    )
    parser.add_argument(
        "--backend",
        default="auto",
        help="inference backend: auto (default, as dcrn run), torch, onnxruntime, openvino, tensorrt",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument(
        "--evidence",
        metavar="DIR",
        help="write a clip and a snapshot of every action here (docs/evidence.md); the event list plays them. "
        "Remembered in the settings; --evidence '' turns it off",
    )
    parser.add_argument(
        "--people",
        type=bounded(int, 1, 16, name="people"),
        default=1,
        metavar="N",
        help="models taught on the body: follow up to N people, each with their own decision drawn above them "
        "and their own events (default 1: the largest person)",
    )
    parser.add_argument(
        "--settings",
        metavar="PATH",
        help="keep the window's settings in this INI file instead of the per-user location (also $DCRN_GUI_SETTINGS)",
    )


def main(args: argparse.Namespace) -> int:
    from dcrn.app.gui.main import run_gui  # Qt is imported only when the window is wanted

    return run_gui(
        args.source,
        args.model,
        backend=args.backend,
        device=args.device,
        settings_path=args.settings,
        evidence=args.evidence,
        people=args.people,
    )
