#!/usr/bin/env python3
"""Fault run: one headless ``dcrn run`` against a real RTSP camera with a password in its URL, while the
camera is killed and restarted ``--kills`` times and frozen (SIGSTOP, ``--freeze-s`` seconds) and thawed
``--freezes`` times. Measures, for every fault, how long until ``stream_lost`` and until predictions
resume, and checks what a user relies on:

- one ``stream_lost`` and one ``stream_restored`` per fault, predictions after each;
- ``dcrn run`` exits 0 on SIGINT at the end, every JSONL line whole;
- the password appears nowhere: not in records, stdout or stderr.

    .venv/bin/python scripts/fault_run.py                       # 20 kills + 2 freezes of 10 s (about 4 min)
    .venv/bin/python scripts/fault_run.py --kills 2 --freezes 1 --freeze-s 5 --out runs/fault-quick

Writes ``OUT/summary.json`` (figures and checks), ``OUT/faults.csv`` (one row per fault), ``OUT/run.jsonl``,
``OUT/stdout.txt`` and ``OUT/stderr.txt``. Exit status 0 when every check passed, 1 otherwise. Needs the
RTSP test server's Debian packages (``scripts/install-system-deps``); talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.rtsp_fixture import RtspServer, unavailable_reason  # noqa: E402

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
        self.path = path
        self.records: list[dict] = []
        self._offset = 0

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as file:
            file.seek(self._offset)
            data = file.read()
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            self.records.append(json.loads(line))
        self._offset += end

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="kill and restart the camera N times (default 20)")
    parser.add_argument("--freezes", type=int, default=2, help="freeze and thaw the camera N times (default 2)")
    parser.add_argument("--freeze-s", type=float, default=10.0, help="each freeze lasts S seconds (default 10)")
    parser.add_argument("--down-s", type=float, default=2.0, help="a killed camera stays down S seconds (default 2)")
    parser.add_argument("--up-s", type=float, default=3.0, help="predictions flow S seconds between faults (default 3)")
    parser.add_argument("--stall-timeout", type=float, default=3.0, help="dcrn run --stall-timeout (default 3)")
    parser.add_argument("--model", default="default", help="checkpoint or shipped model (default: default)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "fault-run", help="output folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"fault_run: {reason}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl, stdout_path, stderr_path = args.out / "run.jsonl", args.out / "stdout.txt", args.out / "stderr.txt"
    jsonl.unlink(missing_ok=True)
    password = "pw-" + secrets.token_hex(8)
    faults: list[Fault] = []
    failures: list[str] = []
    started = time.time()
    exit_code = None
    with RtspServer(user="admin", password=password, width=640, height=480, fps=25) as server:
        command = [sys.executable, "-m", "dcrn.app", "run", "--source", server.url, "--model", args.model]
        command += ["--sink", f"jsonl:{jsonl}", "--stats-interval", "5", "--stall-timeout", str(args.stall_timeout)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=REPO)
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
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
                try:
                    exit_code = proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    exit_code = proc.wait(timeout=10)
                    failures.append("dcrn run did not exit within 60 s of SIGINT")
    summary = summarise(args, faults, failures, exit_code, jsonl, stdout_path, stderr_path, password, started)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (args.out / "faults.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(asdict(Fault(0, "", 0.0))))
        writer.writeheader()
        writer.writerows(asdict(f) for f in faults)
    print(json.dumps({k: summary[k] for k in ("checks", "figures")}, indent=2))
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
        "command": "scripts/fault_run.py " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
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
    sys.exit(main())
