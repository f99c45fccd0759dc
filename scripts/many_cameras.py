#!/usr/bin/env python3
"""Many cameras on one box: ``dcrn run`` on N RTSP sessions of one live camera (GStreamer's RTSP server on
127.0.0.1, H.264, shared media: the camera encodes once, as a real one does) for a fixed time, and what it
kept up with: fps, drops and latency per stream, CPU use, and where the time of a frame went.

    .venv/bin/python scripts/many_cameras.py --streams 8                       # 640x480 25 fps, 40 s
    .venv/bin/python scripts/many_cameras.py --streams 12 --seconds 20 --out runs/cams-12

Prints one JSON summary and writes it to ``OUT/summary.json`` with the run's records (``OUT/run.jsonl``)
and log (``OUT/stderr.txt``). The first ``--warmup-s`` seconds count for drops but not for fps or
latency. Other load on the machine changes every figure: the summary keeps the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.rtsp_fixture import RtspServer, unavailable_reason  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=8, help="RTSP sessions at once (default 8)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=40.0, help="how long dcrn run runs (default 40)")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="left out of fps and latency (default 3)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--extra", default="", help="more dcrn run arguments, as one string")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "many-cameras")
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
    reason = unavailable_reason()
    if reason:
        print(f"many_cameras: {reason}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl, stderr_path = args.out / "run.jsonl", args.out / "stderr.txt"
    jsonl.unlink(missing_ok=True)
    load_before = os.getloadavg()
    with RtspServer(width=args.width, height=args.height, fps=args.fps) as server:
        command = [sys.executable, "-m", "dcrn.app", "run", "--model", args.model, "--backend", args.backend]
        for _ in range(args.streams):
            command += ["--source", server.url]
        command += ["--duration", str(args.seconds), "--sink", f"jsonl:{jsonl}", "--stats-interval", "5"]
        command += args.extra.split()
        start_failures = []
        for _attempt in range(3):  # a start-up failure (one session refused) is retried, and reported
            with stderr_path.open("wb") as err:
                proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
                server_cpu = CpuSampler(server._proc.pid)
                cpu = CpuSampler(proc.pid)
                try:
                    code = proc.wait(timeout=args.seconds + 180)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGINT)
                    code = proc.wait(timeout=30)
                finally:
                    cpu.stop()
                    server_cpu.stop()
            if code != 2:
                break
            start_failures.append(stderr_path.read_text().strip().splitlines()[-1])
            jsonl.unlink(missing_ok=True)
    summary = summarise(args, jsonl, cpu, server_cpu, code, load_before)
    summary["start_failures"] = start_failures
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0 if code == 0 else 1


def summarise(args, jsonl: Path, cpu: CpuSampler, server_cpu: CpuSampler, code: int, load_before) -> dict:
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
        "command": "scripts/many_cameras.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
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
    sys.exit(main())
