"""Screenshot of the desktop window running live on the demo stream (docs/results/gui.png).

    .venv/bin/python -m scripts.measure.screenshot_gui                  # offscreen, shipped default model
    .venv/bin/python -m scripts.measure.screenshot_gui --xvfb --out /tmp/x.png   # a real X window under Xvfb
    .venv/bin/python -m scripts.measure.screenshot_gui --model ckpt.pt --wait 10

It opens the same window as ``dcrn gui`` (settings kept in a temporary file, never the user's), starts the
demo stream, waits until predictions have been on screen for ``--wait`` seconds, and saves the grab.
Offscreen (the default) renders the window with Qt's offscreen platform; ``--xvfb`` runs the script again
under ``xvfb-run`` with the X11 platform and captures the window from the X server's screen.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts.measure import harness

log = logging.getLogger("screenshot_gui")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "gui.png", help="PNG to write")
    parser.add_argument("--model", default="default", help="checkpoint path or shipped model name")
    parser.add_argument("--source", default="synthetic:", help="source URI (default: the demo stream)")
    parser.add_argument("--wait", type=float, default=8.0, help="seconds of live predictions before the grab")
    parser.add_argument("--size", default="1280x760", help="window size WxH")
    parser.add_argument("--xvfb", action="store_true", help="capture a real X11 window under xvfb-run")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up when no prediction shows by then")
    return parser.parse_args(argv)


def rerun_under_xvfb(argv: list[str]) -> int:
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        log.error("xvfb-run is not installed (Debian package xvfb)")
        return 2
    args = [a for a in argv if a != "--xvfb"]
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "SCREENSHOT_GUI_X11": "1"}
    command = [xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable, "-m", __spec__.name, *args]
    return subprocess.run(command, env=env, check=False, cwd=harness.REPO).returncode


def capture(args: argparse.Namespace) -> int:
    from PyQt6.QtCore import QEventLoop, QTimer

    from dcrn.app.gui.main import build

    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="dcrn-screenshot-") as tmp:
        gui = build(Path(tmp) / "settings.ini")
        gui.window.resize(width, height)
        gui.window.show()
        gui.controller.start(source=args.source, model=args.model)

        def pump(seconds: float) -> None:
            loop = QEventLoop()
            QTimer.singleShot(int(seconds * 1000), loop.quit)
            loop.exec()

        deadline = time.monotonic() + args.timeout
        while gui.controller.first_prediction_s is None and time.monotonic() < deadline:
            if gui.controller.status == "error":
                log.error("the window shows an error: %s", gui.window.banner.label.text())
                gui.window.close()
                return 1
            pump(0.1)
        if gui.controller.first_prediction_s is None:
            log.error("no prediction on screen within %.0f s", args.timeout)
            gui.window.close()
            return 1
        pump(args.wait)
        if os.environ.get("SCREENSHOT_GUI_X11"):
            image = gui.window.screen().grabWindow(gui.window.winId())
        else:
            image = gui.window.grab()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        saved = image.save(str(args.out), "PNG")
        log.info(
            "%s %s (%dx%d): %s %.0f%%, %s, first prediction after %.2f s",
            "wrote" if saved else "could not write",
            args.out,
            image.width(),
            image.height(),
            gui.window.view.overlay.label,
            gui.window.view.overlay.score * 100,
            gui.window.fps_label.text(),
            gui.controller.first_prediction_s,
        )
        gui.window.close()
        return 0 if saved else 1


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.xvfb:
        return rerun_under_xvfb(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    return capture(args)


if __name__ == "__main__":
    harness.run(main)
