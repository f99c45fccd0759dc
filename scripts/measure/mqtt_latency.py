"""Latency from a frame's capture to the broker (and to a webhook) for ``action_started`` events.

Starts a Mosquitto broker on a free 127.0.0.1 port (tests/fixtures/mqtt.py) with a subscriber on it and a
local HTTP endpoint, runs ``dcrn run`` on ``--streams`` synthetic streams for ``--seconds`` with both an
``mqtt://`` and a ``webhook:`` sink, and takes, for every ``action_started``, the time the subscriber (or
the endpoint) received it less the record's ``wall`` (when its frame was captured). Both clocks are this
machine's ``time.time()``. Writes ``summary.json`` (p50 / p99 / max in ms) to ``--out``.

    .venv/bin/python -m scripts.measure.mqtt_latency [--streams 2 --seconds 60] [--json PATH]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from scripts.measure import harness
from tests.fixtures.http_receiver import Receiver
from tests.fixtures.mqtt import Broker, Subscriber, unavailable_reason

TARGET_P99_MS = 250.0


def percentiles(values_ms: list[float]) -> dict:
    if not values_ms:
        return {"count": 0}
    data = np.asarray(values_ms)
    return {
        "count": len(values_ms),
        "p50_ms": round(float(np.percentile(data, 50)), 1),
        "p99_ms": round(float(np.percentile(data, 99)), 1),
        "max_ms": round(float(data.max()), 1),
    }


def main() -> int:
    parser = harness.parser(__doc__, "mqtt-latency")
    harness.run_flags(parser)
    harness.time_flags(parser, seconds=60.0)
    parser.add_argument("--streams", type=int, default=2, help="synthetic streams (default 2)")
    parser.add_argument("--json", type=Path, help="also write the summary here (e.g. docs/results/...)")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"mqtt_latency: {reason}", file=sys.stderr)
        return harness.EXIT_UNAVAILABLE
    sources = [f"synthetic:?seed={seed}" for seed in range(args.streams)]
    with tempfile.TemporaryDirectory() as tmp, Receiver() as receiver:
        broker = Broker(Path(tmp) / "broker").start()
        try:
            with Subscriber(broker.port, ["dcrn/+/event"]) as sub:
                command = harness.dcrn_run(
                    sources,
                    model=args.model,
                    backend=args.backend,
                    sink=f"mqtt://127.0.0.1:{broker.port}/dcrn",
                    duration=args.seconds,
                    extra=["--sink", f"webhook:{receiver.url}", "--sink", f"jsonl:{Path(tmp) / 'run.jsonl'}"],
                )
                env = {**os.environ, "DCRN_CACHE_DIR": str(Path(tmp) / "cache")}
                with harness.Child(command, stderr=Path(tmp) / "stderr.txt", env=env) as child:
                    code = child.wait(timeout=args.seconds + 300)
                if code != 0:
                    print((Path(tmp) / "stderr.txt").read_text()[-3000:], file=sys.stderr)
                    return 1
                sub.wait(lambda _: False, timeout=1.0)  # the last records in flight
                mqtt = [
                    (m.received - json.loads(m.payload)["wall"]) * 1e3
                    for m in list(sub.messages)
                    if json.loads(m.payload)["event"] == "action_started"
                ]
                webhook = [
                    (r.received - r.body["wall"]) * 1e3
                    for r in receiver.requests
                    if r.body and r.body.get("event") == "action_started"
                ]
                records = [json.loads(line) for line in (Path(tmp) / "run.jsonl").read_text().splitlines()]
        finally:
            broker.close()
    written = [r for r in records if r.get("type") == "event"]
    summary = {
        "what": "action_started: frame capture (record wall) -> received by an MQTT subscriber / HTTP endpoint",
        "command": harness.command_line("mqtt_latency"),
        "when": harness.utc(),
        "streams": args.streams,
        "seconds": args.seconds,
        "events_written": len(written),
        "events_received_mqtt": len(list(sub.messages)),
        "events_received_webhook": len([r for r in receiver.requests if r.body and r.body.get("type") == "event"]),
        "mqtt": percentiles(mqtt),
        "webhook": percentiles(webhook),
        "target_p99_ms": TARGET_P99_MS,
        "load_average": harness.load_average(),
        "machine": harness.machine_info(packages=("onnxruntime", "paho-mqtt", "psutil")),
    }
    summary["checks"] = {
        "every event reached the broker": summary["events_received_mqtt"] >= len(written),
        "every event reached the webhook": summary["events_received_webhook"] >= len(written),
        "mqtt p99 under target": summary["mqtt"].get("p99_ms", 1e9) < TARGET_P99_MS,
    }
    harness.write_json(args.out / "summary.json", summary)
    if args.json:
        harness.write_json(args.json, summary)
    print(harness.table([(k, json.dumps(v)) for k, v in summary.items() if k not in ("machine", "command")]))
    return 0 if all(summary["checks"].values()) else 1


if __name__ == "__main__":
    harness.run(main)
