"""Fault run: one headless ``dcrn run`` against a real RTSP camera with a password in its URL, while the
camera is killed and restarted ``--kills`` times and frozen (SIGSTOP, ``--freeze-s`` seconds) and thawed
``--freezes`` times. Measures, for every fault, how long until ``stream_lost`` and until predictions
resume, and checks what a user relies on:

- one ``stream_lost`` and one ``stream_restored`` per fault, predictions after each;
- ``dcrn run`` exits 0 on SIGINT at the end, every JSONL line whole;
- the password appears nowhere: not in records, stdout or stderr.

    .venv/bin/python -m scripts.measure.fault_run        # 20 kills + 2 freezes of 10 s (about 4 min)
    .venv/bin/python -m scripts.measure.fault_run --kills 2 --freezes 1 --freeze-s 5 --out runs/fault-quick

Writes ``OUT/summary.json`` (figures and checks), ``OUT/faults.csv`` (one row per fault), ``OUT/run.jsonl``,
``OUT/stdout.txt`` and ``OUT/stderr.txt``, and prints the checks and figures. Exit status 0 when every
check passed, 1 otherwise. Needs the RTSP test server's Debian packages (``scripts/install-system-deps``);
talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from scripts.measure import harness

WAIT_S = 40.0  # the longest any one step may take before the run counts as failed


@dataclass
class Fault:
    index: int
    kind: str  # "kill" or "freeze"
    at: float  # wall time the fault began
    back: float = 0.0  # wall time the camera was serving again (restart ready, or SIGCONT)
    lost_after_s: float | None = None  # fault -> stream_lost record
    resumed_after_s: float | None = None  # camera back -> first prediction after stream_restored
    outage_s: float | None = None  # fault -> first prediction after stream_restored
    detail: str = ""  # the stream_lost record's reason


class Records:
    """Reads the JSONL sink as ``dcrn run`` writes it: only whole lines, remembers every record."""

    def __init__(self, path: Path) -> None:
        self.tail = harness.JsonlTail(path)
        self.records: list[dict] = []

    def poll(self) -> None:
        self.records += self.tail.read()

    def wait(self, match, start: int, timeout: float = WAIT_S) -> tuple[int, dict]:
        """(index, record) of the first record at or after ``start`` for which ``match(record)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            for index in range(start, len(self.records)):
                if match(self.records[index]):
                    return index, self.records[index]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no matching record within {timeout:g} s")
            time.sleep(0.05)


def is_event(name: str):
    return lambda r: r.get("type") == "event" and r.get("event") == name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = harness.parser(__doc__, "fault-run")
    parser.add_argument("--kills", type=int, default=20, help="kill and restart the camera N times (default 20)")
    parser.add_argument("--freezes", type=int, default=2, help="freeze and thaw the camera N times (default 2)")
    parser.add_argument("--freeze-s", type=float, default=10.0, help="each freeze lasts S seconds (default 10)")
    parser.add_argument("--down-s", type=float, default=2.0, help="a killed camera stays down S seconds (default 2)")
    parser.add_argument("--up-s", type=float, default=3.0, help="predictions flow S seconds between faults (default 3)")
    parser.add_argument("--stall-timeout", type=float, default=3.0, help="dcrn run --stall-timeout (default 3)")
    harness.run_flags(parser, backend=False)
    harness.camera_flags(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not harness.require_camera("fault_run"):
        return harness.EXIT_UNAVAILABLE
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl, stdout_path, stderr_path = args.out / "run.jsonl", args.out / "stdout.txt", args.out / "stderr.txt"
    jsonl.unlink(missing_ok=True)
    password = "pw-" + secrets.token_hex(8)
    faults: list[Fault] = []
    failures: list[str] = []
    started = time.time()
    exit_code = None
    with harness.camera(args, user="admin", password=password) as server:
        command = harness.dcrn_run(
            [server.url],
            model=args.model,
            sink=f"jsonl:{jsonl}",
            stats_interval=5,
            extra=["--stall-timeout", str(args.stall_timeout)],
        )
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        child = harness.Child(command, stdout=stdout_path, stderr=stderr_path, env=env)
        records = Records(jsonl)
        try:
            cursor, _ = records.wait(lambda r: r.get("type") == "prediction", 0, timeout=120)
            plan = ["kill"] * args.kills + ["freeze"] * args.freezes
            for index, kind in enumerate(plan):
                time.sleep(args.up_s)
                fault = Fault(index=index, kind=kind, at=time.time())
                records.poll()
                cursor = len(records.records)
                if kind == "kill":
                    server.kill()
                    time.sleep(args.down_s)
                    server.start()
                else:
                    server.pause()
                    time.sleep(args.freeze_s)
                    server.resume()
                fault.back = time.time()
                try:
                    lost_index, lost = records.wait(is_event("stream_lost"), cursor)
                    fault.lost_after_s = round(lost["wall"] - fault.at, 3)
                    fault.detail = lost.get("detail", "")
                    restored_index, restored = records.wait(is_event("stream_restored"), lost_index)
                    _, first = records.wait(
                        lambda r, n=restored["frame"]: r.get("type") == "prediction" and r["frame"] >= n,
                        restored_index,
                    )
                    fault.resumed_after_s = round(first["wall"] - fault.back, 3)
                    fault.outage_s = round(first["wall"] - fault.at, 3)
                except TimeoutError as exc:
                    failures.append(f"{kind} {index}: {exc}")
                faults.append(fault)
                print(
                    f"fault_run: {kind:6s} {index + 1:2d}/{len(plan)}: lost after {fault.lost_after_s} s, "
                    f"predictions {fault.resumed_after_s} s after the camera was back",
                    file=sys.stderr,
                )
                if failures:
                    break
            time.sleep(args.up_s)
        finally:
            exit_code = child.stop()
            if child.killed:
                failures.append(f"dcrn run did not exit within {harness.STOP_GRACE_S:g} s of SIGINT")
    summary = summarise(args, faults, failures, exit_code, jsonl, stdout_path, stderr_path, password, started)
    summary = {"command": harness.command_line("fault_run", argv), **summary}
    harness.write_json(args.out / "summary.json", summary)
    harness.write_csv(args.out / "faults.csv", (asdict(f) for f in faults), [f.name for f in fields(Fault)])
    rows = harness.checks_rows(summary["checks"])
    for kind, figures in summary["figures"].items():
        rows.append((f"{kind} x {figures['count']}, median / max (s)", ""))
        for name, what in (("lost_after_s", "lost"), ("resumed_after_s", "predictions again"), ("outage_s", "outage")):
            rows.append((f"  {what}", f"{figures[name + '_median']} / {figures[name + '_max']}"))
    print(harness.table(rows, f"fault_run: {len(faults)} faults, exit code {exit_code}"))
    return 0 if all(summary["checks"].values()) else 1


def summarise(args, faults, failures, exit_code, jsonl, stdout_path, stderr_path, password, started) -> dict:
    text = jsonl.read_bytes() if jsonl.exists() else b""
    lines = text.split(b"\n")
    whole = text.endswith(b"\n") and all(_parses(line) for line in lines[:-1])
    records = [json.loads(line) for line in lines[:-1]] if whole else []
    events = [r.get("event") for r in records if r.get("type") == "event"]
    expected = args.kills + args.freezes
    leaked = [p.name for p in (jsonl, stdout_path, stderr_path) if password.encode() in p.read_bytes()]
    measured = [f for f in faults if f.resumed_after_s is not None]
    checks = {
        "every_fault_measured": not failures and len(faults) == expected,
        "stream_lost_per_fault": events.count("stream_lost") == expected,
        "stream_restored_per_fault": events.count("stream_restored") == expected,
        "predictions_resumed_every_time": len(measured) == expected,
        "exit_code_0": exit_code == 0,
        "jsonl_lines_whole": whole,
        "password_nowhere": not leaked,
    }
    figures = {}
    for kind in ("kill", "freeze"):
        chosen = [f for f in faults if f.kind == kind and f.resumed_after_s is not None]
        if chosen:
            figures[kind] = {
                "count": len(chosen),
                **_spread("lost_after_s", [f.lost_after_s for f in chosen]),
                **_spread("resumed_after_s", [f.resumed_after_s for f in chosen]),
                **_spread("outage_s", [f.outage_s for f in chosen]),
            }
    return {
        "started": harness.utc(started),
        "duration_s": round(time.time() - started, 1),
        "load_average": harness.load_average(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "events": {name: events.count(name) for name in sorted(set(events))},
        "predictions": sum(1 for r in records if r.get("type") == "prediction"),
        "exit_code": exit_code,
        "leaked_into": leaked,
        "failures": failures,
        "checks": checks,
        "figures": figures,
    }


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _spread(name: str, values: list[float]) -> dict:
    return {
        f"{name}_median": round(statistics.median(values), 3),
        f"{name}_max": round(max(values), 3),
        f"{name}_min": round(min(values), 3),
    }


if __name__ == "__main__":
    harness.run(main)
