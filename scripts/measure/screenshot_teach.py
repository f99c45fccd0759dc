"""Screenshot of the window's Teach panel after a real teach session on the demo stream (docs/results/teach.png).

    .venv/bin/python -m scripts.measure.screenshot_teach
    .venv/bin/python -m scripts.measure.screenshot_teach --out /tmp/teach.png --clips 3 --seconds 1.5

Offscreen, with settings and the data set in a temporary folder (never the user's): starts the demo
stream, adds labels, records clips of each label from the stream through the panel, trains, lets the
stream run on the taught model, then starts one more recording and grabs the window with the REC overlay.

The demo stream knows what its actor does (the "truth" line on the video), so each clip is recorded just
as the actor starts the action of its label, as a person would perform it in front of a camera.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from scripts.measure import harness

log = logging.getLogger("screenshot_teach")

# label -> the demo stream's action recorded for it ("nothing" is the suggested background label)
LABELS = {"nothing": "still", "move_left": "move_left", "move_right": "move_right"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "teach.png", help="PNG to write")
    parser.add_argument("--model", default="default", help="the model running before training")
    parser.add_argument("--clips", type=int, default=3, help="clips recorded per label")
    parser.add_argument("--seconds", type=float, default=1.5, help="length of each clip (segments last 2-5 s)")
    parser.add_argument("--size", default="1320x900", help="window size WxH")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up on a step after this many seconds")
    return parser.parse_args(argv)


def capture(args: argparse.Namespace) -> int:
    from PyQt6.QtCore import QEventLoop, QTimer

    from dcrn.app.gui.main import build

    def pump(seconds: float) -> None:
        loop = QEventLoop()
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()

    def wait(what: str, condition) -> None:
        deadline = time.monotonic() + args.timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {args.timeout:.0f} s ({gui.window.teach.message.text()})")
            pump(0.05)

    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="dcrn-screenshot-") as tmp:
        os.environ["HOME"] = tmp  # the data set shows as ~/dcrn-teach/my-actions, as on a user's machine
        gui = build(Path(tmp) / "settings.ini")
        gui.controller.settings.teach_dataset = str(Path(tmp) / "dcrn-teach" / "my-actions")
        gui.window.resize(width, height)
        gui.window.show()
        teach, panel = gui.controller.teach, gui.window.teach
        try:
            gui.controller.start(source="synthetic:", model=args.model)
            wait("first prediction", lambda: gui.controller.first_prediction_s is not None)
            gui.window.show_teach()
            for label in LABELS:
                if label not in panel.label_names():
                    panel.label_added.emit(label)
            panel.seconds.setValue(args.seconds)
            panel.countdown.setValue(0)
            panel.count.setValue(1)
            wanted = {label: args.clips for label in LABELS}
            previous = gui.window.view.overlay.truth
            deadline = time.monotonic() + args.timeout
            while any(wanted.values()) and time.monotonic() < deadline:
                pump(0.02)
                truth = gui.window.view.overlay.truth
                label = next((k for k, v in LABELS.items() if v == truth), None)
                if truth != previous and label and wanted[label] and not teach.recording:
                    panel.select_label(label)
                    panel.record_requested.emit()  # the actor has just started this label's action
                    wanted[label] -= 1
                previous = truth
            wait(
                "the last clip", lambda: not teach.recording and sum(teach.dataset.counts().values()) == 3 * args.clips
            )
            pump(0.5)
            panel.train_requested.emit()
            wait("training", lambda: teach.train_job is None)
            if teach.last_report is None:
                log.error("training failed: %s", panel.message.text())
                return 1
            log.info("%s", teach.last_report.summary())
            wait("the taught model", lambda: gui.window.view.overlay.label in panel.label_names())

            def right() -> bool:
                overlay = gui.window.view.overlay
                return overlay.truth != "still" and LABELS.get(overlay.label) == overlay.truth

            wait("a right prediction of a taught action", right)
            panel.select_label(gui.window.view.overlay.label)
            panel.seconds.setValue(3.0)
            panel.record_requested.emit()
            pump(1.2)
            image = gui.window.grab()
        finally:
            gui.window.close()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        saved = image.save(str(args.out), "PNG")
        log.info("%s %s (%dx%d)", "wrote" if saved else "could not write", args.out, image.width(), image.height())
        return 0 if saved else 1


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    return capture(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    harness.run(main)
