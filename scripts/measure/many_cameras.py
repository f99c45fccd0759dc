"""Many cameras on one box: ``dcrn run`` on N RTSP sessions of one live camera (GStreamer's RTSP server on
127.0.0.1, H.264, shared media: the camera encodes once, as a real one does) for a fixed time, and what it
kept up with: fps, drops and latency per stream, CPU use, and where the time of a frame went.

    .venv/bin/python -m scripts.measure.many_cameras --streams 8                    # 640x480 25 fps, 40 s
    .venv/bin/python -m scripts.measure.many_cameras --streams 12 --seconds 20 --out runs/cams-12

Writes ``OUT/summary.json`` with the run's records (``OUT/run.jsonl``) and log (``OUT/stderr.txt``), and
prints the main figures. The first ``--warmup-s`` seconds count for drops but not for fps or
latency. Other load on the machine changes every figure: the summary keeps the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import threading
from pathlib import Path

import psutil

from scripts.measure import harness


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = harness.parser(__doc__, "many-cameras")
    parser.add_argument("--streams", type=int, default=8, help="RTSP sessions at once (default 8)")
    harness.camera_flags(parser)
    harness.time_flags(parser, seconds=40.0, warmup_s=3.0, warmup="left out of fps and latency")
    harness.run_flags(parser, extra=True)
    return parser.parse_args(argv)


class CpuSampler:
    """CPU use of a process tree (percent of one core), sampled every second on a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[float] = []
        self.threads: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.process.cpu_percent(None)
            while not self._stop.wait(1.0):
                self.samples.append(self.process.cpu_percent(None))
                self.threads.append(self.process.num_threads())
        except psutil.Error:
            pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not harness.require_camera("many_cameras"):
        return harness.EXIT_UNAVAILABLE
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl, stderr_path = args.out / "run.jsonl", args.out / "stderr.txt"
    jsonl.unlink(missing_ok=True)
    load_before = os.getloadavg()
    with harness.camera(args) as server:
        command = harness.dcrn_run(
            [server.url] * args.streams,
            model=args.model,
            backend=args.backend,
            duration=args.seconds,
            sink=f"jsonl:{jsonl}",
            stats_interval=5,
            extra=args.extra.split(),
        )
        start_failures = []
        for _attempt in range(3):  # a start-up failure (one session refused) is retried, and reported
            with harness.Child(command, stderr=stderr_path) as child:
                server_cpu = CpuSampler(server._proc.pid)
                cpu = CpuSampler(child.pid)
                try:
                    code = child.wait(timeout=args.seconds + 180)
                except subprocess.TimeoutExpired:
                    code = child.stop(grace_s=30)
                finally:
                    cpu.stop()
                    server_cpu.stop()
            if code != 2:
                break
            start_failures.append(stderr_path.read_text().strip().splitlines()[-1])
            jsonl.unlink(missing_ok=True)
    summary = summarise(args, jsonl, cpu, server_cpu, code, load_before, argv)
    summary["start_failures"] = start_failures
    harness.write_json(args.out / "summary.json", summary)
    rows = [
        (key, summary[key])
        for key in ("backend", "fps_min", "dropped_percent", "latency_ms_p99_max", "cpu_percent_dcrn", "threads_dcrn")
    ]
    title = f"many_cameras: {args.streams} streams of {summary['camera']}, exit code {code}"
    print(harness.table([*rows, ("start failures", len(start_failures))], title))
    return 0 if code == 0 else 1


def summarise(
    args, jsonl: Path, cpu: CpuSampler, server_cpu: CpuSampler, code: int | None, load_before, argv: list[str] | None
) -> dict:
    text = jsonl.read_text() if jsonl.exists() else ""
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    predictions = [r for r in records if r.get("type") == "prediction"]
    start = min((r["wall"] for r in predictions), default=0.0)
    final = {}
    for record in records:
        if record.get("type") == "stats":
            final[record["stream"]] = record  # the last one per stream: the end of the run
    streams = {}
    for name in sorted({r["stream"] for r in predictions}):
        mine = [r for r in predictions if r["stream"] == name and r["wall"] >= start + args.warmup_s]
        span = mine[-1]["wall"] - mine[0]["wall"] if len(mine) > 1 else 0.0
        latencies = sorted(r["latency_ms"] for r in mine)
        stats = final.get(name, {})
        streams[name] = {
            "fps": round((len(mine) - 1) / span, 2) if span > 0 else 0.0,
            "frames": stats.get("frames"),
            "dropped": stats.get("dropped"),
            "latency_ms_p50": _percentile(latencies, 50),
            "latency_ms_p99": _percentile(latencies, 99),
            "stages_p99": {k: v.get("p99") for k, v in stats.get("stages", {}).items()},
        }
    frames = sum(s["frames"] or 0 for s in streams.values())
    dropped = sum(s["dropped"] or 0 for s in streams.values())
    steady = cpu.samples[int(args.warmup_s) : -1] or cpu.samples
    return {
        "command": harness.command_line("many_cameras", argv),
        "when": harness.utc(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": harness.load_average(),
        "cpus": os.cpu_count(),
        "exit_code": code,
        "streams": args.streams,
        "camera": f"{args.width}x{args.height} {args.fps} fps H.264",
        "model": args.model,
        "backend": next((r.get("backend") for r in records if r.get("type") == "stats"), None),
        "fps_min": min((s["fps"] for s in streams.values()), default=0.0),
        "dropped_percent": round(100.0 * dropped / (frames + dropped), 2) if frames + dropped else None,
        "latency_ms_p99_max": max((s["latency_ms_p99"] or 0 for s in streams.values()), default=None),
        "cpu_percent_dcrn": round(statistics.mean(steady), 1) if steady else None,
        "cpu_percent_camera_server": round(statistics.mean(server_cpu.samples), 1) if server_cpu.samples else None,
        "threads_dcrn": max(cpu.threads, default=None),
        "per_stream": streams,
    }


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, round(q / 100.0 * (len(ordered) - 1)))], 1)


if __name__ == "__main__":
    harness.run(main)
