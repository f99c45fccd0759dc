#!/usr/bin/env python3
"""A real multi-node Ray cluster on this one machine, for tests and benchmarks of ``dcrn run --cluster``.

    .venv/bin/python scripts/local_cluster.py --workers 2 --cores 0,1

Starts a head node (no CPU for streams: it runs the GCS and the dashboard) and ``--workers`` worker nodes,
each its own raylet with its own worker processes, ``--cpus`` Ray CPUs each, all on 127.0.0.1 (Ray's
``cluster_utils``, the way Ray tests itself). ``--cores`` pins worker node K (its raylet and every process
it starts) to core K of the list, so "a node with one CPU" really has one core. Token authentication is
on, with a fresh token: whoever joins needs ``RAY_AUTH_MODE=token`` and the token printed.

Prints one JSON line when ready: ``{"address", "token", "dashboard", "nodes": [{"node_id", "pid"}]}``;
then reads commands on stdin, one per line, and answers each with one JSON line:

    kill K    # worker node K dies: its raylet and its workers are killed (SIGKILL), like a machine lost
    add       # one more worker node (next core of --cores, if any)
    quit      # everything stops (also at end of input)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker nodes (default 2)")
    parser.add_argument("--cpus", type=float, default=1.0, help="Ray CPUs of each worker node (default 1)")
    parser.add_argument("--cores", default="", help="comma-separated cores, worker node K pinned to the K-th")
    parser.add_argument("--dashboard", action="store_true", help="start the dashboard on the head (127.0.0.1)")
    parser.add_argument("--temp-dir", help="Ray's session folder, logs included (default /tmp/ray); keep it short")
    return parser.parse_args(argv)


def pin(raylet: int, core: int) -> None:
    """Every thread of the raylet and of the processes it started, on ``core``.

    Affinity is per thread: pinning a process id pins its main thread only, and the raylet starts its
    workers from other threads. Threads and processes made later inherit the core of the thread that
    makes them, so once all are pinned the node stays on its core.
    """
    import psutil

    for process in [psutil.Process(raylet), *psutil.Process(raylet).children(recursive=True)]:
        for task in Path(f"/proc/{process.pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):  # the thread ended meanwhile
                os.sched_setaffinity(int(task.name), {core})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.basicConfig(level=logging.WARNING)
    from ray.cluster_utils import Cluster

    cores = [int(c) for c in args.cores.split(",") if c.strip()]
    common = {"node_ip_address": "127.0.0.1", "object_store_memory": 100 * 1024 * 1024}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **common,
            "num_cpus": 0,
            "temp_dir": args.temp_dir,
            "include_dashboard": args.dashboard,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": 0 if args.dashboard else None,
            # a node that stops answering is declared dead after about 2 s instead of 30
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 4},
        },
    )
    workers = []

    def add() -> dict:
        k = len(workers)
        node = cluster.add_node(**common, num_cpus=args.cpus, resources={f"worker{k}": 1.0})
        raylet = node.all_processes["raylet"][0].process.pid
        if k < len(cores):
            pin(raylet, cores[k])
        workers.append(node)
        return {"node_id": node.node_id, "pid": raylet, "core": cores[k] if k < len(cores) else None}

    try:
        nodes = [add() for _ in range(args.workers)]
        cluster.wait_for_nodes()
        head = cluster.head_node
        dashboard = getattr(head, "webui_url", None) if args.dashboard else None
        ready = {
            "address": cluster.address,
            "token": os.environ["RAY_AUTH_TOKEN"],
            "dashboard": dashboard,
            "nodes": nodes,
        }
        print(json.dumps(ready), flush=True)
        for line in sys.stdin:
            command = line.split()
            if not command:
                continue
            if command[0] == "quit":
                break
            if command[0] == "kill" and len(command) == 2 and command[1].isdigit() and int(command[1]) < len(workers):
                node = workers[int(command[1])]
                if node in cluster.worker_nodes:  # killing a dead node again is a no-op
                    cluster.remove_node(node, allow_graceful=False)
                print(json.dumps({"killed": int(command[1]), "node_id": node.node_id}), flush=True)
            elif command[0] == "add":
                print(json.dumps({"added": add()}), flush=True)
            else:
                print(json.dumps({"error": f"unknown command {line.strip()!r}"}), flush=True)
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
