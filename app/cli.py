"""The ``dcrn`` command line: one parser, one subcommand per module ``dcrn.app.cmd_<name>``.

Each command module provides ``add_arguments(parser)`` and ``main(args) -> int`` and keeps heavy imports
(torch, Qt) inside ``main`` so that ``dcrn --help`` stays fast. A command whose module is not part of
this build is still listed and says so when run. Errors the project raises on purpose (``DcrnError``)
become one line on stderr and exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from dcrn.app.argtypes import Parser  # usage errors are one line, like every other error
from dcrn.models.errors import DcrnError  # no torch: `dcrn --help` imports neither torch nor cv2 nor Qt

# OpenMP threads that spin while idle starve the capture threads on small machines (measured on 2 cores:
# torch on 2 threads dropped 354 of 604 frames of a 30 fps stream; with passive waiting, none). It must be
# set before torch loads its OpenMP runtime (a command's main imports it); a value the user exported wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# name -> one-line help, in the order `dcrn --help` lists them
COMMANDS = {
    "demo": "run the shipped model on the built-in synthetic action stream (no camera needed)",
    "run": "recognise actions on cameras, RTSP streams or files, headless, writing to sinks",
    "gui": "open the desktop window with live video and prediction overlays",
    "record": "record labelled clips from a camera, stream, file or synthetic: into a teach data set",
    "teach": "learn your own actions from a few recorded clips (no other flags needed)",
    "train": "train a model on a folder-per-class video data set",
    "eval": "evaluate a model on a data set (accuracy, confusion, detection delay)",
    "export": "export the per-frame step graph to ONNX or a TensorRT engine",
    "bench": "measure step latency, throughput, constant-latency drift and end-to-end delay",
    "synth": "write a synthetic action data set or continuous stream",
    "config": "check a site config file (cameras, sinks, evidence) for dcrn run --config",
}
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dcrn", description="DCRN Live: real-time action recognition on live video.")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much to log on stderr (default: INFO)",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module = _command_module(name)
        if module is None:
            sub.set_defaults(func=_unavailable(name))
        else:
            module.add_arguments(sub)
            sub.set_defaults(func=module.main)
    return parser


def _command_module(name: str):
    module_name = f"dcrn.app.cmd_{name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise


def _unavailable(name: str):
    def run(args: argparse.Namespace) -> int:
        print(f"dcrn {name}: not available in this build yet", file=sys.stderr)
        return EXIT_USAGE

    return run


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except DcrnError as exc:
        if args.debug:
            raise
        print(f"dcrn {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"dcrn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
