"""The desktop window live on a 30 fps RTSP camera: does it keep up, and how late is a frame on screen?

    .venv/bin/python -m scripts.measure.gui_live                # fight-cctv, 30 s after 5 s warm-up
    .venv/bin/python -m scripts.measure.gui_live --seconds 10 --out runs/gui-live-short

It starts the real GStreamer RTSP test camera on 127.0.0.1 (tests.fixtures.rtsp.RtspServer, 640x480 H.264
at 30 fps by default), opens the same main window as ``dcrn gui`` (Qt's offscreen platform unless
QT_QPA_PLATFORM says otherwise; settings in a temporary file, never the user's) on that camera with
``--model`` and ``--backend`` (default ``auto``, as ``dcrn gui``), waits until predictions are on screen plus
``--warmup-s`` seconds, then measures for ``--seconds``:

- the engine: its stats records (the worker's ``record`` signal, one a second: fps, frames, dropped,
  latency p50/p99 over its last 1000 frames), and capture -> prediction per frame over exactly the
  measured window (``EngineWorker.set_tap`` runs right after the prediction is written);
- the window: frames handed to it (``frame_ready`` taken off the GUI queue), frames skipped by the worker
  because two were still waiting to be painted (``EngineWorker.display_dropped``), frames actually
  painted (``VideoView.paintEvent`` drew them), frames replaced by a newer one before a paint came,
  and capture -> paint latency: from ``Shown.captured`` to the end of the window's repaint pass that
  drew the frame (the top-level ``UpdateRequest``: every dirty widget painted and the backing store
  flushed). Both hooks are event filters on the window; product code is not changed;
- where the CPU time went: seconds per thread (GUI thread, engine thread, capture thread, the rest of
  the process) and the camera server's, over the measured window.

Prints a short table and writes ``OUT/summary.json`` (the machine, load average at start and end, UTC
times) and ``OUT/stats.jsonl`` (the engine's stats records). Every wait has a deadline; the window and
the camera server are always closed, and a watchdog ends the process should closing itself hang.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import statistics
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import psutil

from scripts.measure import harness
from tests.fixtures.rtsp import RtspServer

log = logging.getLogger("gui_live")
EXIT_WATCHDOG = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = harness.parser(__doc__, "gui-live")
    harness.run_flags(parser, model="fight-cctv")
    harness.time_flags(parser, seconds=30.0, warmup_s=5.0, warmup="after the first frame on screen")
    harness.camera_flags(parser, fps=30)
    parser.add_argument("--size", default="1200x720", help="window size WxH (default 1200x720, the window's own)")
    parser.add_argument("--start-timeout", type=float, default=90.0, help="give up when no frame shows by then")
    return parser.parse_args(argv)


@dataclass
class Taken:
    """One frame the window took off its queue."""

    image: object  # the QImage, kept only while it is needed to tell which frame a paint drew (`is`)
    captured: float  # time.monotonic() at capture
    taken: float  # when the GUI thread handled frame_ready for it (at the latest, when it was painted)
    painted: float | None = None  # end of the view's paintEvent that first drew it
    flushed: float | None = None  # end of the window's repaint pass (UpdateRequest) that drew it
    superseded: bool = False  # replaced by a newer frame before any paint


class WindowProbe:
    """Event filters on the video view (Paint) and the top-level window (UpdateRequest), and a frame_ready slot.

    The filters run the widget's own handler themselves (``paintEvent`` / ``event``) so that they can stamp
    the time after it, and return True so it does not run twice.
    """

    def __init__(self, window) -> None:
        from PyQt6.QtCore import QEvent, QObject

        probe = self

        class Filter(QObject):
            def eventFilter(self, obj, event) -> bool:
                kind = event.type()
                if obj is probe.view and kind == QEvent.Type.Paint:
                    probe._paint(event)
                    return True
                if obj is probe.window and kind == QEvent.Type.UpdateRequest:
                    probe._update_request(event)
                    return True
                return False

        self.window = window
        self.view = window.view
        self.frames: list[Taken] = []  # every frame taken, in order; only pending ones keep their image
        self.paint_ms: list[tuple[float, float]] = []  # (end, ms) of every view paintEvent with a frame
        self.pass_ms: list[tuple[float, float]] = []  # (end, ms) of every window repaint pass that drew a frame
        self.update_requests = 0
        self._pending: list[Taken] = []  # taken, not painted yet
        self._early: deque[Taken] = deque(maxlen=4)  # painted, frame_taken not run yet
        self._last_painted = None  # the image of the last paint (one reference, to tell repaints)
        self._in_pass: list[Taken] = []
        self._filter = Filter()
        self.view.installEventFilter(self._filter)
        self.window.installEventFilter(self._filter)

    def remove(self) -> None:
        self.view.removeEventFilter(self._filter)
        self.window.removeEventFilter(self._filter)

    def frame_taken(self, shown) -> None:
        """Runs after the controller's slot for the same frame (queued in connection order).

        The engine thread posts the two slot calls one after the other, so the GUI thread may already have
        run the controller's and painted the frame before this one runs: such a frame waits in ``_early``.
        """
        now = time.monotonic()
        for old in self._pending:  # the view holds this newer frame now: these can no longer be painted
            old.superseded = True
            old.image = None
        self._pending = []
        item = next((i for i in self._early if i.image is shown.image), None)
        if item is not None:
            self._early.remove(item)
            item.captured, item.taken, item.image = shown.captured, min(now, item.painted), None
        else:
            item = Taken(shown.image, shown.captured, now)
            self._pending = [item]
        self.frames.append(item)

    def _paint(self, event) -> None:
        start = time.monotonic()
        self.view.paintEvent(event)
        end = time.monotonic()
        image = self.view.image
        if image is None:
            return
        self.paint_ms.append((end, (end - start) * 1000.0))
        if image is self._last_painted:  # the same frame again (a resize, an overlay change)
            return
        self._last_painted = image
        item = next((i for i in self._pending if i.image is image), None)
        if item is not None:
            self._pending.remove(item)
            item.image = None
        else:  # painted before frame_taken ran for it
            item = Taken(image, 0.0, end)
            self._early.append(item)
        item.painted = end
        self._in_pass.append(item)

    def _update_request(self, event) -> None:
        from PyQt6.QtWidgets import QMainWindow

        self.update_requests += 1
        start = time.monotonic()
        self._in_pass = []
        QMainWindow.event(self.window, event)
        end = time.monotonic()
        if self._in_pass:
            self.pass_ms.append((end, (end - start) * 1000.0))
        for item in self._in_pass:
            item.flushed = end
        self._in_pass = []


class ThreadClock:
    """CPU seconds per thread of this process, grouped: GUI, engine, capture, other; and of the camera server."""

    def __init__(self, server_pid: int | None) -> None:
        self.process = psutil.Process()
        self.server = psutil.Process(server_pid) if server_pid else None

    def sample(self, engine_thread: threading.Thread | None) -> dict[str, float]:
        names = {threading.main_thread().native_id: "gui"}
        if engine_thread is not None and engine_thread.native_id is not None:
            names[engine_thread.native_id] = "engine"
        for thread in threading.enumerate():
            if thread.name.startswith("capture-") and thread.native_id is not None:
                names[thread.native_id] = "capture"
        groups = {"gui": 0.0, "engine": 0.0, "capture": 0.0, "other": 0.0}
        for thread in self.process.threads():
            groups[names.get(thread.id, "other")] += thread.user_time + thread.system_time
        try:
            if self.server is not None:
                times = self.server.cpu_times()
                groups["camera_server"] = times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            pass
        return groups


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank, as the engine's LatencyWindow."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))], 1)


def measure(args: argparse.Namespace, server: RtspServer, settings_dir: Path) -> dict:
    from PyQt6.QtCore import QEventLoop, Qt, QTimer

    from dcrn.app.gui.main import build

    def pump(seconds: float) -> None:
        loop = QEventLoop()
        QTimer.singleShot(max(0, int(seconds * 1000)), loop.quit)
        loop.exec()

    width, height = (int(v) for v in args.size.lower().split("x"))
    gui = build(settings_dir / "settings.ini", backend=args.backend)
    probe = WindowProbe(gui.window)
    stats: list[tuple[float, dict]] = []
    engine_lat: list[tuple[float, float]] = []  # (monotonic at prediction, capture -> prediction ms)
    clock = ThreadClock(server._proc.pid if server._proc is not None else None)
    result: dict = {}
    try:
        gui.window.resize(width, height)
        gui.window.show()
        gui.controller.start(source=server.url, model=args.model)
        worker = gui.controller.worker
        queued = Qt.ConnectionType.QueuedConnection
        worker.frame_ready.connect(probe.frame_taken, queued)  # after the controller's: it runs second

        def on_record(record: dict) -> None:
            if record.get("type") == "stats":
                stats.append((time.monotonic(), record))

        worker.record.connect(on_record, queued)

        def tap(frame) -> None:  # the engine thread, right after the frame's prediction was written
            now = time.monotonic()
            engine_lat.append((now, (now - frame.captured) * 1000.0))

        worker.set_tap(tap)

        deadline = time.monotonic() + args.start_timeout
        while gui.controller.first_prediction_s is None and time.monotonic() < deadline:
            if gui.controller.status == "error":
                raise RuntimeError(f"the window shows an error: {gui.window.banner.label.text()}")
            pump(0.1)
        if gui.controller.first_prediction_s is None:
            raise RuntimeError(f"no frame on screen within {args.start_timeout:.0f} s")
        log.info(
            "first frame on screen after %.2f s; warming up %.0f s", gui.controller.first_prediction_s, args.warmup_s
        )
        pump(args.warmup_s)

        begin = time.monotonic()
        cpu_begin = clock.sample(worker._thread)
        display_dropped_begin = worker.display_dropped
        painted_counter_begin = gui.window.view.frames_painted
        update_requests_begin = probe.update_requests
        stats_begin = stats[-1][1] if stats else None
        log.info("measuring %.0f s", args.seconds)
        end_at = begin + args.seconds
        while time.monotonic() < end_at:
            pump(min(5.0, end_at - time.monotonic()))
            if stats:
                log.info("engine: %s", _stats_text(stats[-1][1]))
            if worker is not gui.controller.worker or gui.controller.status not in ("live", "stalled"):
                raise RuntimeError(f"the stream left 'live' while measuring: {gui.controller.status}")
        end = time.monotonic()
        cpu_end = clock.sample(worker._thread)
        display_dropped = worker.display_dropped - display_dropped_begin
        painted_counter = gui.window.view.frames_painted - painted_counter_begin
        update_requests = probe.update_requests - update_requests_begin
        status = gui.controller.status
        window_texts = [gui.window.fps_label.text(), gui.window.latency_label.text(), gui.window.dropped_label.text()]
        span = end - begin

        window_stats = [r for t, r in stats if begin <= t <= end]
        last = window_stats[-1] if window_stats else None
        frames_engine = last["frames"] - (stats_begin["frames"] if stats_begin else 0) if last else None
        dropped_engine = last["dropped"] - (stats_begin["dropped"] if stats_begin else 0) if last else None
        in_window = [ms for t, ms in list(engine_lat) if begin <= t <= end]
        taken = [i for i in probe.frames if begin <= i.taken <= end]
        painted = [i for i in probe.frames if i.painted is not None and begin <= i.painted <= end]
        superseded = [i for i in taken if i.superseded]
        to_paint = [((i.flushed or i.painted) - i.captured) * 1000.0 for i in painted]
        to_take = [(i.taken - i.captured) * 1000.0 for i in taken]
        # how soon the frame that replaced a never-painted one came: a burst (two frames queued at once)
        # or a slow window (the next frame came a whole frame period later and still no paint had run)
        replaced_gap = [
            (new.taken - old.taken) * 1000.0
            for old, new in itertools.pairwise(probe.frames)
            if old.superseded and begin <= old.taken <= end
        ]
        paint_ms = [ms for t, ms in probe.paint_ms if begin <= t <= end]
        pass_ms = [ms for t, ms in probe.pass_ms if begin <= t <= end]
        cpu = {k: round(cpu_end.get(k, 0.0) - cpu_begin.get(k, 0.0), 2) for k in cpu_end}
        result = {
            "status_at_end": status,
            "first_frame_on_screen_s": round(gui.controller.first_prediction_s, 2),
            "measured_s": round(span, 2),
            "backend": next((r.get("backend") for _, r in stats if r.get("backend")), None),
            "backend_reason": next((r.get("backend_reason") for _, r in stats if r.get("backend_reason")), None),
            "engine": {
                "stats_records": len(window_stats),
                "fps_mean": round(statistics.mean(r["fps"] for r in window_stats), 2) if window_stats else None,
                "fps_min": min((r["fps"] for r in window_stats), default=None),
                "frames": frames_engine,
                "dropped": dropped_engine,
                "dropped_total_at_end": last["dropped"] if last else None,
                "latency_ms_p50_last_record": last["latency_ms_p50"] if last else None,
                "latency_ms_p99_last_record": last["latency_ms_p99"] if last else None,
                "latency_ms_p99_max_record": max((r["latency_ms_p99"] or 0 for r in window_stats), default=None),
                "stages_last_record": last.get("stages") if last else None,
                "capture_to_prediction_frames": len(in_window),
                "capture_to_prediction_ms_p50": percentile(in_window, 50),
                "capture_to_prediction_ms_p99": percentile(in_window, 99),
                "capture_to_prediction_ms_max": round(max(in_window), 1) if in_window else None,
            },
            "window": {
                "frames_taken": len(taken),
                "frames_painted": len(painted),
                "painted_per_s": round(len(painted) / span, 2) if span > 0 else None,
                "display_dropped": display_dropped,
                "superseded_before_paint": len(superseded),
                "superseded_next_frame_after_ms_p50": percentile(replaced_gap, 50),
                "superseded_next_frame_after_ms_max": round(max(replaced_gap), 1) if replaced_gap else None,
                "video_paint_events": len(paint_ms),
                "paint_events_with_a_frame": painted_counter,
                "repaint_passes": update_requests,
                "capture_to_take_ms_p50": percentile(to_take, 50),
                "capture_to_take_ms_p99": percentile(to_take, 99),
                "capture_to_paint_ms_p50": percentile(to_paint, 50),
                "capture_to_paint_ms_p99": percentile(to_paint, 99),
                "capture_to_paint_ms_max": round(max(to_paint), 1) if to_paint else None,
                "painted_outside_a_pass": sum(1 for i in painted if i.flushed is None),
                "video_paint_ms_p50": percentile(paint_ms, 50),
                "video_paint_ms_p99": percentile(paint_ms, 99),
                "repaint_pass_ms_p50": percentile(pass_ms, 50),
                "repaint_pass_ms_p99": percentile(pass_ms, 99),
                "status_bar": window_texts,
                "size": [gui.window.width(), gui.window.height()],
                "video_size": [gui.window.view.width(), gui.window.view.height()],
                "qt_platform": gui.app.platformName(),
            },
            "cpu_seconds": cpu,
            "cpu_percent_of_one_core": {k: round(100.0 * v / span, 1) for k, v in cpu.items()} if span > 0 else {},
        }
        (args.out / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for _, r in stats))
    finally:
        probe.remove()
        started = time.monotonic()
        gui.window.close()  # closing -> controller.shutdown: engine stopped, settings saved (bounded)
        for leftover in list(gui.controller.stopping):
            leftover.join(max(0.0, 5.0 - (time.monotonic() - started)))
        alive = [w for w in gui.controller.stopping if not w.join(0)]
        result["close_s"] = round(time.monotonic() - started, 2)
        result["engine_threads_alive_after_close"] = len(alive)
        pump(0.05)  # queued signals of the finished worker
    return result


def _stats_text(record: dict) -> str:
    return (
        f"{record['fps']:.1f} fps, {record['frames']} frames, {record['dropped']} dropped, "
        f"latency p50/p99 {record['latency_ms_p50']}/{record['latency_ms_p99']} ms"
    )


def table(summary: dict) -> str:
    e, w = summary["result"]["engine"], summary["result"]["window"]
    cpu = summary["result"]["cpu_percent_of_one_core"]
    rows = [
        ("engine fps (stats records, mean / min)", f"{e['fps_mean']} / {e['fps_min']}"),
        (
            "engine frames predicted / dropped (measured; whole session)",
            f"{e['capture_to_prediction_frames']} / {e['dropped']}; {e['dropped_total_at_end']}",
        ),
        (
            "capture -> prediction p50 / p99 (every frame)",
            f"{e['capture_to_prediction_ms_p50']} / {e['capture_to_prediction_ms_p99']} ms",
        ),
        (
            "  same, engine's last stats record (last 1000 frames)",
            f"{e['latency_ms_p50_last_record']} / {e['latency_ms_p99_last_record']} ms",
        ),
        ("frames taken by the window / painted", f"{w['frames_taken']} / {w['frames_painted']}"),
        ("painted per second", f"{w['painted_per_s']}"),
        ("skipped while painting (display_dropped)", f"{w['display_dropped']}"),
        (
            "replaced before a paint came (next frame after, p50)",
            f"{w['superseded_before_paint']} ({w['superseded_next_frame_after_ms_p50']} ms)",
        ),
        ("capture -> take p50 / p99", f"{w['capture_to_take_ms_p50']} / {w['capture_to_take_ms_p99']} ms"),
        ("capture -> paint p50 / p99", f"{w['capture_to_paint_ms_p50']} / {w['capture_to_paint_ms_p99']} ms"),
        ("video paintEvent p50 / p99", f"{w['video_paint_ms_p50']} / {w['video_paint_ms_p99']} ms"),
        ("window repaint pass p50 / p99", f"{w['repaint_pass_ms_p50']} / {w['repaint_pass_ms_p99']} ms"),
        (
            "CPU, % of one core: GUI / engine / capture / other / camera",
            " / ".join(str(cpu.get(k)) for k in ("gui", "engine", "capture", "other", "camera_server")),
        ),
    ]
    head = (
        f"{summary['model']} on {summary['camera']}, backend {summary['result']['backend']}, "
        f"{summary['result']['measured_s']} s measured, load {summary['load_average_start'][0]} -> "
        f"{summary['load_average_end'][0]}"
    )
    return harness.table(rows, head)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if not harness.require_camera("gui_live"):
        return harness.EXIT_UNAVAILABLE
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    args.out.mkdir(parents=True, exist_ok=True)
    started_wall = time.time()
    load_start = os.getloadavg()
    servers: list[RtspServer] = []

    def watchdog() -> None:  # the last resort: every wait above has its own deadline
        log.error("still running after %.0f s: stopping the camera server and exiting", limit)
        for server in servers:
            server.stop()
        os._exit(EXIT_WATCHDOG)

    limit = args.start_timeout + args.warmup_s + args.seconds + 120.0
    timer = threading.Timer(limit, watchdog)
    timer.daemon = True
    timer.start()
    error = None
    result: dict = {}
    try:
        with (
            tempfile.TemporaryDirectory(prefix="dcrn-gui-live-") as tmp,
            harness.camera(args) as server,
        ):
            servers.append(server)
            log.info("camera %dx%d at %d fps on %s", args.width, args.height, args.fps, server.url)
            try:
                result = measure(args, server, Path(tmp))
            except RuntimeError as exc:
                error = str(exc)
                log.error("%s", error)
    finally:
        timer.cancel()
    summary = {
        "command": harness.command_line("gui_live", argv),
        "started": harness.utc(started_wall),
        "ended": harness.utc(),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": harness.load_average(),
        "machine": harness.machine_info(("torch", "onnxruntime", "PyQt6", "opencv-python-headless", "av")),
        "model": args.model,
        "camera": f"RTSP {args.width}x{args.height} {args.fps} fps H.264 (GStreamer test server, 127.0.0.1)",
        "warmup_s": args.warmup_s,
        "error": error,
        "result": result,
    }
    harness.write_json(args.out / "summary.json", summary)
    if error is None and result.get("engine"):
        text = table(summary)
        (args.out / "table.txt").write_text(text + "\n")
        print(text)
    log.info("wrote %s", args.out / "summary.json")
    return 0 if error is None else 1


if __name__ == "__main__":
    harness.run(main)
