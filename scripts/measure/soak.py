"""Soak: ``dcrn run`` on 4 RTSP sessions of one live camera (GStreamer's RTSP server on 127.0.0.1) for an
hour, sampling the process's resident memory, thread count and open file descriptors over time.

    .venv/bin/python -m scripts.measure.soak                  # 4 streams, 60 minutes
    .venv/bin/python -m scripts.measure.soak --minutes 10     # the short form

Writes ``OUT/soak.csv`` (one row per sample), ``OUT/soak.png`` (the three curves) and
``OUT/summary.json``, whose checks are: RSS growth under 20 MB (the median of the last five samples
against the median of the five after the warm-up), and thread and descriptor counts flat after the
warm-up; prints the figures and the checks. Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

from scripts.measure import harness

MAX_RSS_GROWTH_MB = 20.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = harness.parser(__doc__, "soak")
    parser.add_argument("--streams", type=int, default=4)
    harness.time_flags(parser, minutes=60.0, warmup_s=60.0, warmup="left out of the checks")
    parser.add_argument("--interval-s", type=float, default=10.0, help="seconds between samples (default 10)")
    harness.camera_flags(parser)
    harness.run_flags(parser, backend=False)
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
    if not harness.require_camera("soak"):
        return harness.EXIT_UNAVAILABLE
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / "run.jsonl"
    jsonl.unlink(missing_ok=True)
    samples: list[dict] = []
    load = [os.getloadavg()]
    with harness.camera(args) as server:
        # The JSONL sink rotates (max_mb, keep) so a long run does not fill the disk.
        command = harness.dcrn_run(
            [server.url] * args.streams, model=args.model, sink=f"jsonl:{jsonl}?max_mb=50&keep=2", stats_interval=30
        )
        with harness.Child(command, stderr=args.out / "stderr.txt") as child:
            process = psutil.Process(child.pid)
            started = time.monotonic()
            end = started + args.minutes * 60.0
            while time.monotonic() < end and child.poll() is None:
                time.sleep(min(args.interval_s, max(0.0, end - time.monotonic())))
                if child.poll() is None:
                    samples.append(sample(process, started))
                    if len(samples) > 1 and samples[-1]["threads"] != samples[-2]["threads"]:
                        print(f"soak: threads now {thread_names(child.pid)}", file=sys.stderr)
                    if len(samples) % 30 == 0:
                        load.append(os.getloadavg())
                        print(f"soak: {samples[-1]}", file=sys.stderr)
        code = child.returncode
    load.append(os.getloadavg())
    harness.write_csv(args.out / "soak.csv", samples, ["elapsed_s", "rss_mb", "threads", "fds", "cpu_s"])
    summary = summarise(args, samples, code, load, argv)
    harness.write_json(args.out / "summary.json", summary)
    plot(samples, args, args.out / "soak.png")
    rows = [
        ("samples", summary["samples"]),
        ("RSS first / last (MB)", f"{summary['rss_mb_first']} / {summary['rss_mb_last']}"),
        ("RSS growth after warm-up (MB)", summary["rss_growth_mb"]),
        ("threads / descriptors seen", f"{summary['threads_seen']} / {summary['fds_seen']}"),
        ("CPU (% of one core)", summary["cpu_percent"]),
        *harness.checks_rows(summary["checks"]),
    ]
    print(harness.table(rows, f"soak: {args.streams} streams, {args.minutes:g} min, exit code {code}"))
    return 0 if all(summary["checks"].values()) else 1


def summarise(args, samples: list[dict], code: int | None, load: list, argv: list[str] | None) -> dict:
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
        "command": harness.command_line("soak", argv),
        "when": harness.utc(),
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
    harness.run(main)
