#!/usr/bin/env python3
"""Soak: ``dcrn run`` on 4 RTSP sessions of one live camera (GStreamer's RTSP server on 127.0.0.1) for an
hour, sampling the process's resident memory, thread count and open file descriptors over time.

    .venv/bin/python scripts/soak.py                     # 4 streams, 60 minutes
    .venv/bin/python scripts/soak.py --minutes 10        # the short form

Writes ``OUT/soak.csv`` (one row per sample), ``OUT/soak.png`` (the three curves) and
``OUT/summary.json``, whose checks are: RSS growth under 20 MB (the median of the last five samples
against the median of the five after the warm-up), and thread and descriptor counts flat after the
warm-up. Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.rtsp_fixture import RtspServer, unavailable_reason  # noqa: E402

MAX_RSS_GROWTH_MB = 20.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=60.0, help="how long (default 60)")
    parser.add_argument("--interval-s", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="left out of the checks (default 60)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "soak")
    return parser.parse_args(argv)


def sample(process: psutil.Process, started: float) -> dict:
    with process.oneshot():
        return {
            "elapsed_s": round(time.monotonic() - started, 1),
            "rss_mb": round(process.memory_info().rss / 2**20, 2),
            "threads": process.num_threads(),
            "fds": process.num_fds(),
            "cpu_s": round(sum(process.cpu_times()[:2]), 1),
        }


def thread_names(pid: int) -> list[str]:
    """Names of a process's threads (Linux), to say which ones came or went."""
    names = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            names.append((task / "comm").read_text().strip())
    return sorted(names)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"soak: {reason}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / "run.jsonl"
    jsonl.unlink(missing_ok=True)
    samples: list[dict] = []
    load = [os.getloadavg()]
    with RtspServer(width=args.width, height=args.height, fps=args.fps) as server:
        command = [sys.executable, "-m", "dcrn.app", "run", "--model", args.model]
        for _ in range(args.streams):
            command += ["--source", server.url]
        # The JSONL sink rotates (max_mb, keep) so a long run does not fill the disk.
        command += ["--sink", f"jsonl:{jsonl}?max_mb=50&keep=2", "--stats-interval", "30"]
        with (args.out / "stderr.txt").open("wb") as err:
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
            process = psutil.Process(proc.pid)
            started = time.monotonic()
            end = started + args.minutes * 60.0
            try:
                while time.monotonic() < end and proc.poll() is None:
                    time.sleep(min(args.interval_s, max(0.0, end - time.monotonic())))
                    if proc.poll() is None:
                        samples.append(sample(process, started))
                        if len(samples) > 1 and samples[-1]["threads"] != samples[-2]["threads"]:
                            print(f"soak: threads now {thread_names(proc.pid)}", file=sys.stderr)
                        if len(samples) % 30 == 0:
                            load.append(os.getloadavg())
                            print(f"soak: {samples[-1]}", file=sys.stderr)
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
                try:
                    code = proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    code = proc.wait(timeout=10)
    load.append(os.getloadavg())
    with (args.out / "soak.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["elapsed_s", "rss_mb", "threads", "fds", "cpu_s"])
        writer.writeheader()
        writer.writerows(samples)
    summary = summarise(args, samples, code, load)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(samples, args, args.out / "soak.png")
    print(json.dumps(summary, indent=2))
    return 0 if all(summary["checks"].values()) else 1


def summarise(args, samples: list[dict], code: int, load: list) -> dict:
    steady = [s for s in samples if s["elapsed_s"] >= args.warmup_s]
    enough = len(steady) >= 10
    growth = None
    if enough:
        last, first = steady[-5:], steady[:5]
        growth = statistics.median(s["rss_mb"] for s in last) - statistics.median(s["rss_mb"] for s in first)
    threads = sorted({s["threads"] for s in steady})
    fds = sorted({s["fds"] for s in steady})
    cpu = None
    if len(steady) >= 2:
        cpu = (steady[-1]["cpu_s"] - steady[0]["cpu_s"]) / (steady[-1]["elapsed_s"] - steady[0]["elapsed_s"])
    return {
        "command": "scripts/soak.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "streams": args.streams,
        "minutes": args.minutes,
        "load_average": [[round(x, 2) for x in sample] for sample in load],
        "exit_code": code,
        "samples": len(samples),
        "rss_mb_first": samples[0]["rss_mb"] if samples else None,
        "rss_mb_last": samples[-1]["rss_mb"] if samples else None,
        "rss_growth_mb": None if growth is None else round(growth, 2),
        "threads_seen": threads,
        "fds_seen": fds,
        "cpu_percent": None if cpu is None else round(100.0 * cpu, 1),
        "checks": {
            "ran_to_the_end": enough and code == 0,
            "rss_growth_under_20_mb": growth is not None and growth < MAX_RSS_GROWTH_MB,
            "threads_flat": len(threads) == 1,
            "fds_flat": bool(fds) and fds[-1] - fds[0] <= 2,  # a log rotation may hold one more for a moment
        },
    }


def plot(samples: list[dict], args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s["elapsed_s"] / 60.0 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    for ax, key, title in zip(
        axes, ("rss_mb", "threads", "fds"), ("resident memory (MB)", "threads", "open descriptors"), strict=True
    ):
        ax.plot(minutes, [s[key] for s in samples], lw=1.2)
        ax.set_ylabel(title)
        ax.axvline(args.warmup_s / 60.0, color="grey", lw=0.8, ls="--")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"dcrn run, {args.streams} RTSP streams {args.width}x{args.height} {args.fps} fps")
    axes[-1].set_xlabel("minutes (dashed: end of warm-up)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
