"""Cluster scaling on this machine: how many RTSP streams ``dcrn run --cluster`` keeps live with one worker
node and with two (each node held to a core of its own), and what a stream costs through the cluster
compared with plain ``dcrn run`` on one box.

    .venv/bin/python -m scripts.measure.cluster_scaling                        # 640x480 25 fps, 15-20 min
    .venv/bin/python -m scripts.measure.cluster_scaling --steps 8,12,16 --cost-streams 8 --out runs/scaling-2
    .venv/bin/python -m scripts.measure.cluster_scaling --quick                # smoke run, about 3 min

The camera is scripts/measure/many_cameras.py's: one live GStreamer RTSP camera on 127.0.0.1, one session per
stream. A real Ray cluster runs on this machine (scripts/local_cluster.py): a head with no CPU and one
worker node per core. Core 0 holds this script, the camera server, the head and the ``dcrn run`` driver;
one worker node gets core 1, two worker nodes get cores 0 and 1 (so node 0 shares its core with them).
scripts/local_cluster.py pins every thread of a node when it starts; as a guard, every thread of a node
(and of the one-box run) is put back on its core here twice a second (``threads_moved_back`` counts them).

1. Capacity: for one node, then two, the stream count goes up ``--steps`` until a count is not live.
   Live: over the ``--window-s`` seconds after ``--warmup-s`` (counted from the moment every stream has
   frames), every stream ran at >= ``--live-fps`` and dropped < ``--live-drop-pct`` % of its frames.
2. Cost: ``--cost-streams`` streams by plain ``dcrn run`` (pinned to core 1), then by ``dcrn run
   --cluster`` on one node (core 1), in CPU ms per stream-frame, counted two ways, both without what the
   camera server added (a real camera encodes on its own). ``machine``: whole-machine CPU over the window
   (psutil.cpu_times deltas) minus a baseline of the same length (the camera server with no session; for
   the cluster, the idle cluster too). ``processes``: the CPU of dcrn run and of every Ray process (head
   and nodes) minus the idle cluster's. Ray's idle overhead is reported both ways too. Another user's
   work on the machine lands in ``machine`` only; each window says how much there was (``others``).

Writes ``OUT/summary.json`` (machine, load average at start and end, times, every trial's per-stream
figures; rewritten after every trial) and ``OUT/table.txt`` (the table printed at the end); each trial's
records go to ``OUT/TRIAL.jsonl`` and its log to ``OUT/TRIAL.stderr.txt``. Other load on the machine
changes every figure, the CPU ones most: the summary keeps the load average.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil

from scripts.measure import harness
from tests.fixtures.cluster import LocalCluster

HOST_CORE = 0  # this script, the camera server, the Ray head and the driver
NODE_CORE = 1  # the one worker node, and plain dcrn run when it is compared with it
TWO_NODE_CORES = [0, 1]
STATS_INTERVAL_S = 2.0
OUR_TREES = {"camera_server": "camera_server", "this_script": "this_script"}  # CPU timeline keys
SAMPLE_S = 1.0  # CPU timeline resolution
PIN_S = 0.5  # how often node threads are put back on their core

FULL = {"steps": "4,8,12,16,20,24", "cost_streams": 8, "warmup_s": 10.0, "window_s": 30.0, "baseline_s": 20.0}
QUICK = {"steps": "2,4", "cost_streams": 2, "warmup_s": 3.0, "window_s": 10.0, "baseline_s": 5.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = harness.parser(__doc__, "cluster-scaling")
    parser.add_argument("--steps", help=f"stream counts tried per node count (default {FULL['steps']})")
    parser.add_argument("--cost-streams", type=int, help=f"streams of the cost trials (default {FULL['cost_streams']})")
    parser.add_argument(
        "--warmup-s", type=float, help=f"left out once every stream has frames (default {FULL['warmup_s']:g})"
    )
    parser.add_argument("--window-s", type=float, help=f"the measured window (default {FULL['window_s']:g})")
    parser.add_argument("--baseline-s", type=float, help=f"each CPU baseline (default {FULL['baseline_s']:g})")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: " + ", ".join(f"{k} {v}" for k, v in QUICK.items())
    )
    harness.camera_flags(parser)
    parser.add_argument("--live-fps", type=float, default=24.0, help="a live stream runs at least this fast (24)")
    parser.add_argument("--live-drop-pct", type=float, default=1.0, help="... and drops less than this %% (1)")
    harness.run_flags(parser, extra=True)
    parser.add_argument("--start-timeout-s", type=float, default=120.0, help="for every stream to have frames (120)")
    parser.add_argument(
        "--cameras",
        type=int,
        default=1,
        help="camera servers, sessions spread over them in turn (default 1; one test server answers about 20 "
        "sessions); the second and later count among others' CPU",
    )
    parser.add_argument(
        "--only-two-nodes",
        action="store_true",
        help="only the two-node capacity series (no cost trials, no one-node series): to extend --steps upward",
    )
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.steps = [int(s) for s in str(args.steps).split(",") if s.strip()]
    return args


# -- CPU: the whole machine and process trees, over time -----------------------------------------------


def busy_core_seconds() -> float:
    """CPU seconds the whole machine spent not idle, summed over cores (guest time is already in user)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


def tree_processes(pid: int, tree: bool = True) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)] if tree else [root]
    except psutil.Error:
        return []


def tree_cpu_seconds(pid: int, tree: bool = True) -> float | None:
    total, seen = 0.0, False
    for process in tree_processes(pid, tree):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
        seen = True
    return total if seen else None


class CpuTimeline:
    """Samples, every SAMPLE_S on a thread, the machine's busy core-seconds and those of watched process trees;
    ``cores(key, t0, t1)`` is the mean use between two wall-clock times (the JSONL's ``wall``)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._trees: dict[str, tuple[int, bool]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-timeline", daemon=True)
        self._thread.start()

    def watch(self, key: str, pid: int, tree: bool = True) -> None:
        with self._lock:
            self._trees[key] = (pid, tree)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                trees = dict(self._trees)
            values = {"machine": busy_core_seconds()}
            for key, (pid, tree) in trees.items():
                seconds = tree_cpu_seconds(pid, tree)
                if seconds is not None:
                    values[key] = seconds
            with self._lock:
                self.samples.append((time.time(), values))
            self._stop.wait(SAMPLE_S)

    def wait_past(self, wall: float, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not (self.samples and self.samples[-1][0] > wall):
            time.sleep(0.2)

    def cores(self, key: str, t0: float, t1: float) -> float | None:
        with self._lock:
            points = [(t, v[key]) for t, v in self.samples if key in v]
        start, end = _interpolate(points, t0), _interpolate(points, t1)
        if start is None or end is None or t1 <= t0:
            return None
        return round((end - start) / (t1 - t0), 4)

    def use(self, t0: float, t1: float, trees: dict[str, str]) -> dict[str, float | None]:
        """Cores over [t0, t1]: the machine, each of ``trees`` (name -> key) and ``others``, the machine's use
        by processes not ours (other users' work: it makes the machine-wide figures unreliable)."""
        self.wait_past(t1)
        use = {"machine": self.cores("machine", t0, t1)}
        use.update({name: self.cores(key, t0, t1) for name, key in trees.items()})
        ours = [v for n, v in use.items() if n != "machine" and not n.startswith("node")]  # nodes: in "cluster"
        if None not in ours and use["machine"] is not None:
            use["others"] = round(use["machine"] - sum(ours), 4)
        return use

    def save(self, path: Path) -> None:
        with self._lock:
            samples = list(self.samples)
        path.write_text("".join(json.dumps({"wall": round(t, 3), **v}) + "\n" for t, v in samples))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _interpolate(points: list[tuple[float, float]], t: float) -> float | None:
    times = [p[0] for p in points]
    if not points or not times[0] <= t <= times[-1]:
        return None
    i = bisect.bisect_left(times, t)
    if times[i] == t:
        return points[i][1]
    (ta, va), (tb, vb) = points[i - 1], points[i]
    return va + (vb - va) * (t - ta) / (tb - ta)


# -- cores: every thread of a process tree held to one core ----------------------------------------------


class CorePinner:
    """Holds every thread of each pinned process tree to its core, checked every PIN_S on a thread.

    Setting a process's affinity moves only its main thread; threads started before, and processes forked
    from those threads (Ray's raylet starts its workers that way), keep every core. New threads of a
    pinned thread inherit its core, so after a sweep or two a tree stays put.
    """

    def __init__(self) -> None:
        self._rules: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.moved = 0  # threads put back on their core
        self._thread = threading.Thread(target=self._run, name="core-pinner", daemon=True)
        self._thread.start()

    def pin(self, pid: int, core: int) -> None:
        with self._lock:
            self._rules[pid] = core
        self._sweep()

    def unpin(self, pid: int) -> None:
        with self._lock:
            self._rules.pop(pid, None)

    def cores_of(self, pid: int) -> list[int]:
        """The cores any thread of the tree may run on, now."""
        allowed: set[int] = set()
        for tid in _threads(pid):
            try:
                allowed |= os.sched_getaffinity(tid)
            except OSError:
                continue
        return sorted(allowed)

    def _run(self) -> None:
        while not self._stop.wait(PIN_S):
            self._sweep()

    def _sweep(self) -> None:
        with self._lock:
            rules = dict(self._rules)
        for pid, core in rules.items():
            for tid in _threads(pid):
                try:
                    if os.sched_getaffinity(tid) != {core}:
                        os.sched_setaffinity(tid, {core})
                        self.moved += 1
                except OSError:  # the thread ended meanwhile
                    continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _threads(pid: int) -> list[int]:
    tids = []
    for process in tree_processes(pid):
        try:
            tids += [int(t) for t in os.listdir(f"/proc/{process.pid}/task")]
        except OSError:
            continue
    return tids


# -- the Ray cluster --------------------------------------------------------------------------------------


class WatchedCluster(LocalCluster):
    """tests.fixtures.cluster.LocalCluster (a head on this script's core, worker node K on ``cores[K]``), with
    the head and each node watched for CPU and every node thread held on its core."""

    def __init__(
        self, label: str, cores: list[int], pinner: CorePinner, timeline: CpuTimeline, stderr_path: Path
    ) -> None:
        super().__init__(workers=len(cores), cores=cores, ready_timeout_s=120.0, stderr_path=stderr_path)
        self.label, self.pinner, self.timeline = label, pinner, timeline

    def node_index(self, node_id: str | None) -> int | None:
        ids = [n["node_id"] for n in self.info.get("nodes", [])]
        return ids.index(node_id) if node_id in ids else None

    def start(self) -> None:
        super().start()
        self.timeline.watch(f"{self.label}:cluster", self._proc.pid)  # the head and every node
        for k, node in enumerate(self.info["nodes"]):
            self.pinner.pin(node["pid"], self.cores[k])
            self.timeline.watch(f"{self.label}:node{k}", node["pid"])

    def trees(self) -> dict[str, str]:
        """CPU timeline keys of the whole cluster and of each node."""
        return {
            "cluster": f"{self.label}:cluster",
            **{f"node{k}": f"{self.label}:node{k}" for k in range(len(self.cores))},
        }

    def node_cores(self) -> dict[str, list[int]]:
        return {f"node{k}": self.pinner.cores_of(n["pid"]) for k, n in enumerate(self.info.get("nodes", []))}

    def close(self) -> None:
        for node in self.info.get("nodes", []):
            self.pinner.unpin(node["pid"])
        super().close()


# -- one trial: dcrn run, its records, its window ----------------------------------------------------------


class StatsLog:
    """The stats and node_stats records of a trial's JSONL, read as it grows."""

    def __init__(self, path: Path) -> None:
        self.tail = harness.JsonlTail(path, keep=lambda line: b'stats"' in line)  # predictions: skipped unparsed
        self.stats: dict[str, list[dict]] = {}
        self.node_stats: list[dict] = []

    def poll(self) -> None:
        for record in self.tail.read():
            if record.get("type") == "stats":
                self.stats.setdefault(record["stream"], []).append(record)
            elif record.get("type") == "node_stats":
                self.node_stats.append(record)

    def window(self, streams: int, warmup_s: float, window_s: float) -> tuple[float, float] | None:
        """(start, end) wall times of the measured window, once every stream has had frames."""
        firsts = [next((r["wall"] for r in rs if r["frames"] > 0), None) for rs in self.stats.values()]
        firsts = [w for w in firsts if w is not None]
        if len(firsts) < streams:
            return None
        start = max(firsts) + warmup_s
        return start, start + window_s

    def reached(self, wall: float) -> bool:
        return bool(self.stats) and all(rs[-1]["wall"] >= wall for rs in self.stats.values())


def dcrn_command(args: argparse.Namespace, url: str | list[str], streams: int, jsonl: Path) -> list[str]:
    # a cap in case this script stops watching; a trial normally ends with SIGINT once its window is over
    cap_s = args.start_timeout_s + args.warmup_s + args.window_s + 30.0
    urls = url if isinstance(url, list) else [url]
    return harness.dcrn_run(
        [urls[k % len(urls)] for k in range(streams)],  # sessions spread over the cameras in turn
        model=args.model,
        backend=args.backend,
        duration=cap_s,
        stats_interval=STATS_INTERVAL_S,
        sink=f"jsonl:{jsonl}",
        extra=args.extra.split(),
    )


def run_trial(args, name: str, url: str, streams: int, timeline: CpuTimeline, pinner: CorePinner, cluster=None):
    """Runs one trial to the end of its window and returns its figures. A start-up failure (exit code 2:
    a session refused) is retried and reported, as scripts/measure/many_cameras.py does."""
    failures = []
    for _attempt in range(3):
        result = run_once(args, name, url, streams, timeline, pinner, cluster)
        if result["exit_code"] != 2 or result["window"] is not None:
            break
        failures += result.get("stderr_tail", [])[-1:]
    result["start_failures"] = failures
    return result


def run_once(args, name: str, url: str, streams: int, timeline: CpuTimeline, pinner: CorePinner, cluster=None):
    jsonl, stderr_path = args.out / f"{name}.jsonl", args.out / f"{name}.stderr.txt"
    jsonl.unlink(missing_ok=True)
    command = dcrn_command(args, url, streams, jsonl)
    env = dict(os.environ)
    if cluster is not None:
        command += ["--cluster", cluster.address]
        env = cluster.env()
    log = StatsLog(jsonl)
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {streams} stream(s)", flush=True)
    child = harness.Child(command, stderr=stderr_path, env=env)
    try:
        if cluster is None:  # one box: the whole dcrn run on the core a node would have
            pinner.pin(child.pid, NODE_CORE)
        timeline.watch(f"{name}:dcrn_run", child.pid)
        outcome, cores_seen = watch_trial(args, child, log, streams, pinner, cluster)
    finally:
        pinner.unpin(child.pid)
        code = child.stop()
    log.poll()
    result = summarise_trial(args, name, streams, log, timeline, cluster)
    result.update(outcome=outcome, exit_code=code, cores_seen=cores_seen, command=_shown(command))
    if code not in (0, None) or outcome != "window complete":
        result["stderr_tail"] = stderr_path.read_text(errors="replace").strip().splitlines()[-5:]
    result["live"], result["why_not_live"] = judge(args, result, streams)
    return result


def watch_trial(args, proc: harness.Child, log: StatsLog, streams: int, pinner: CorePinner, cluster):
    """Waits for the window's end; returns how the trial went and the cores its processes had mid-window."""
    started = time.monotonic()
    cores_seen: dict = {}
    while proc.poll() is None:
        log.poll()
        window = log.window(streams, args.warmup_s, args.window_s)
        if window is None and time.monotonic() - started > args.start_timeout_s:
            return f"not every stream had frames after {args.start_timeout_s:g} s", cores_seen
        if window is not None and not cores_seen and time.time() > window[0]:
            cores_seen = {
                "dcrn_run": pinner.cores_of(proc.pid),
                **(cluster.node_cores() if cluster is not None else {}),
            }
        if window is not None and log.reached(window[1]):
            return "window complete", cores_seen
        if time.monotonic() - started > args.start_timeout_s + args.warmup_s + args.window_s + 30.0:
            return "window not reached in time", cores_seen
        time.sleep(0.5)
    return f"dcrn run ended early (exit code {proc.returncode})", cores_seen


def summarise_trial(args, name: str, streams: int, log: StatsLog, timeline: CpuTimeline, cluster) -> dict:
    window = log.window(streams, args.warmup_s, args.window_s)
    result: dict = {"trial": name, "streams": streams, "window": None, "per_stream": {}}
    if window is None:
        return result
    t0, t1 = window
    per_stream = {s: stream_window(rs, t0, t1) for s, rs in sorted(log.stats.items())}
    fps = [s["fps"] for s in per_stream.values() if s["fps"] is not None]
    spans = [s["span_s"] for s in per_stream.values() if s["span_s"]]
    trees = {**OUR_TREES, "dcrn_run": f"{name}:dcrn_run", **(cluster.trees() if cluster is not None else {})}
    result.update(
        window={"start": round(t0, 3), "end": round(t1, 3), "measured_s": round(min(spans), 2) if spans else None},
        backend=next((r.get("backend") for rs in log.stats.values() for r in rs if r.get("backend")), None),
        fps_min=min(fps) if fps else None,
        fps_total=round(sum(fps), 2),
        dropped_pct_max=max((s["dropped_pct"] or 0.0 for s in per_stream.values()), default=None),
        latency_ms_p99_max=max((s["latency_ms_p99"] or 0.0 for s in per_stream.values()), default=None),
        cpu_cores=timeline.use(t0, t1, trees),
        node_stats=node_window(log.node_stats, t0, t1, cluster),
        per_stream=per_stream,
    )
    return result


def stream_window(records: list[dict], t0: float, t1: float) -> dict:
    """One stream over [t0, t1]: from its last stats record at or before t0 to its first at or after t1."""
    opening = next((r for r in reversed(records) if r["wall"] <= t0), None)
    closing = next((r for r in records if r["wall"] >= t1), None)
    if opening is None or closing is None:
        return {
            "fps": None,
            "dropped": None,
            "dropped_pct": None,
            "span_s": None,
            "latency_ms_p50": None,
            "latency_ms_p99": None,
            "node": None,
        }
    inside = [r for r in records if opening["wall"] < r["wall"] <= closing["wall"]]
    frames = closing["frames"] - opening["frames"]
    dropped = closing["dropped"] - opening["dropped"]
    span = closing["wall"] - opening["wall"]
    p50 = [r["latency_ms_p50"] for r in inside if r["latency_ms_p50"] is not None]
    p99 = [r["latency_ms_p99"] for r in inside if r["latency_ms_p99"] is not None]
    return {
        "fps": round(frames / span, 2) if span > 0 else None,
        "frames": frames,
        "dropped": dropped,
        "dropped_pct": round(100.0 * dropped / (frames + dropped), 3) if frames + dropped else None,
        "span_s": round(span, 2),
        "reported_fps_min": min((r["fps"] for r in inside), default=None),
        "latency_ms_p50": round(statistics.median(p50), 1) if p50 else None,
        "latency_ms_p99": round(max(p99), 1) if p99 else None,
        "node": closing.get("node"),
    }


def node_window(records: list[dict], t0: float, t1: float, cluster) -> list[dict]:
    """Per node, its node_stats records inside the window: streams, fps, drops, host CPU."""
    out = []
    for node in sorted({r["node"] for r in records}):
        mine = [r for r in records if r["node"] == node and t0 <= r["wall"] <= t1]
        if not mine:
            continue
        out.append(
            {
                "node": node,
                "worker": cluster.node_index(mine[-1].get("node_id")),
                "streams": mine[-1]["streams"],
                "fps_mean": round(statistics.mean(r["fps"] for r in mine), 2),
                "dropped_in_window": mine[-1]["dropped"] - mine[0]["dropped"],
                "latency_ms_p99_max": max((r["latency_ms_p99"] or 0.0 for r in mine), default=None),
                "cpu_pct_mean": round(statistics.mean(r["cpu_pct"] for r in mine), 1),
                "load_mean": round(statistics.mean(r["load"] for r in mine), 3),
            }
        )
    return out


def judge(args, result: dict, streams: int) -> tuple[bool, list[str]]:
    why = []
    if result["outcome"] != "window complete":
        why.append(result["outcome"])
    if len(result["per_stream"]) < streams:
        why.append(f"{len(result['per_stream'])} of {streams} streams had stats")
    for name, s in result["per_stream"].items():
        if s["fps"] is None or s["fps"] < args.live_fps:
            why.append(f"{name}: {s['fps']} fps")
        if s["dropped_pct"] is None or s["dropped_pct"] >= args.live_drop_pct:
            why.append(f"{name}: {s['dropped_pct']}% dropped")
    return not why, why


def _shown(command: list[str]) -> str:
    """The command as run, sources folded (they are all the same camera)."""
    sources = command.count("--source")
    kept, skip = [], False
    for part in command:
        if skip:
            skip = False
            continue
        if part == "--source":
            skip = True
            continue
        kept.append(part)
    return " ".join([*kept[1:4], f"--source URL x{sources}", *kept[4:]])


# -- the two measurements ----------------------------------------------------------------------------------


def baseline(timeline: CpuTimeline, seconds: float, label: str, cluster: WatchedCluster | None = None) -> dict:
    """CPU with nothing of ours streaming, over ``seconds``."""
    print(f"[{time.strftime('%H:%M:%S')}] baseline: {label}, {seconds:g} s", flush=True)
    timeline.wait_past(time.time())  # a sample of every watched process before the start
    t0 = time.time()
    time.sleep(seconds)
    trees = {**OUR_TREES, **(cluster.trees() if cluster is not None else {})}
    return {"what": label, "start": round(t0, 3), "seconds": seconds, **timeline.use(t0, t0 + seconds, trees)}


def cost(trial: dict, base: dict) -> dict:
    """CPU per stream-frame, counted two ways, both without what the camera server added (a real camera
    encodes on its own): ``machine``, the whole machine minus the baseline; ``processes``, the CPU of
    dcrn run and the cluster's processes minus the idle cluster's (immune to other users' work)."""
    cpu, fps = trial.get("cpu_cores") or {}, trial.get("fps_total")
    out: dict = {"stream_frames_per_s": fps, "others_cores": cpu.get("others")}
    try:
        camera = cpu["camera_server"] - base["camera_server"]
        out["camera_server_added_cores"] = round(camera, 4)
        machine = cpu["machine"] - base["machine"] - camera
        processes = cpu["dcrn_run"] + cpu.get("cluster", 0.0) - base.get("cluster", 0.0)
    except (KeyError, TypeError):  # a value the timeline could not give: the trial did not reach its window
        return out
    for way, cores in (("machine", machine), ("processes", processes)):
        out[way] = {"cores": round(cores, 4), "cpu_ms_per_frame": round(1000.0 * cores / fps, 3) if fps else None}
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _difference(a: float | None, b: float | None) -> float | None:
    return round(a - b, 4) if a is not None and b is not None else None


def capacity(args, trials: list[dict], label: str, cluster: WatchedCluster, url: str, timeline, pinner, save) -> dict:
    """Steps the stream count on ``cluster`` until a count is not live."""
    series = {"cores": cluster.cores, "tried": [], "largest_live": 0}
    for streams in args.steps:
        trial = run_trial(args, f"{label}-{streams}", url, streams, timeline, pinner, cluster)
        trials.append(trial)
        series["tried"].append(
            {
                "streams": streams,
                "live": trial["live"],
                "fps_min": trial.get("fps_min"),
                "dropped_pct_max": trial.get("dropped_pct_max"),
            }
        )
        save()
        if not trial["live"]:
            break
        series["largest_live"] = streams
    return series


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not harness.require_camera("cluster_scaling"):
        return harness.EXIT_UNAVAILABLE
    if not {HOST_CORE, NODE_CORE} <= os.sched_getaffinity(0):
        print(f"cluster_scaling: needs cores {HOST_CORE} and {NODE_CORE}", file=sys.stderr)
        return harness.EXIT_UNAVAILABLE
    args.out.mkdir(parents=True, exist_ok=True)
    # Before any thread or child exists: everything started from here (camera, head, driver) inherits core 0.
    os.sched_setaffinity(0, {HOST_CORE})
    summary = {
        "command": harness.command_line("cluster_scaling", argv),
        "started": harness.utc(),
        "load_average_start": harness.load_average(),
        "machine": harness.machine_info(("ray", "onnxruntime", "torch", "psutil")),
        "settings": {
            "camera": f"{args.width}x{args.height} {args.fps} fps H.264, one RTSP session per stream, "
            f"{max(1, args.cameras)} camera server(s)",
            "model": args.model,
            "backend_asked": args.backend,
            "extra": args.extra,
            "stats_interval_s": STATS_INTERVAL_S,
            "warmup_s": args.warmup_s,
            "window_s": args.window_s,
            "baseline_s": args.baseline_s,
            "live": f"every stream >= {args.live_fps:g} fps and < {args.live_drop_pct:g}% dropped over the window",
            "steps": args.steps,
            "cost_streams": args.cost_streams,
        },
        "cores": {
            "this_script_camera_server_ray_head_driver": [HOST_CORE],
            "one_box_run": [NODE_CORE],
            "one_node": [NODE_CORE],
            "two_nodes": TWO_NODE_CORES,
            "note": "node 0 of two shares core 0 with the camera server, the head and the driver; every thread of "
            "a node and of the one-box run is put back on its core every 0.5 s (trials: cores_seen)",
        },
        "trials": [],
    }

    def save() -> None:
        harness.write_json(args.out / "summary.json", summary)

    timeline, pinner = CpuTimeline(), CorePinner()
    try:
        with contextlib.ExitStack() as cameras:
            servers = [cameras.enter_context(harness.camera(args)) for _ in range(max(1, args.cameras))]
            timeline.watch("camera_server", servers[0]._proc.pid)
            timeline.watch("this_script", os.getpid(), tree=False)  # its children are counted apart
            urls = [server.url for server in servers]
            measure(args, summary, urls if len(urls) > 1 else urls[0], timeline, pinner, save)
    finally:
        pinner.stop()
        timeline.stop()
        summary["cores"]["threads_moved_back"] = pinner.moved
        timeline.save(args.out / "cpu_timeline.jsonl")
        summary["finished"] = harness.utc()
        summary["load_average_end"] = harness.load_average()
        save()
    table = render(summary)
    (args.out / "table.txt").write_text(table + "\n")
    print(table)
    return 0


def measure(args, summary: dict, url: str, timeline: CpuTimeline, pinner: CorePinner, save) -> None:
    trials = summary["trials"]
    if args.only_two_nodes:
        summary["capacity"] = {"two_nodes": two_nodes(args, trials, url, timeline, pinner, save)}
        return
    costs = summary["cost"] = {"streams": args.cost_streams}
    costs["baseline_box"] = baseline(timeline, args.baseline_s, "camera server, no session")
    box = run_trial(args, f"cost-box-{args.cost_streams}", url, args.cost_streams, timeline, pinner)
    trials.append(box)
    costs["box"] = cost(box, costs["baseline_box"])
    save()
    scaling = summary["capacity"] = {}
    one = WatchedCluster("one", [NODE_CORE], pinner, timeline, args.out / "cluster-one.stderr.txt")
    try:
        one.start()
        time.sleep(5.0)  # the new node's agents finish starting before the idle cluster is measured
        idle = costs["baseline_cluster"] = baseline(timeline, args.baseline_s, "camera server, idle cluster", one)
        costs["ray_idle_cores"] = {
            "machine": _difference(idle["machine"], costs["baseline_box"]["machine"]),
            "processes": idle.get("cluster"),
        }
        in_cluster = run_trial(args, f"cost-cluster-{args.cost_streams}", url, args.cost_streams, timeline, pinner, one)
        trials.append(in_cluster)
        costs["cluster"] = cost(in_cluster, idle)
        costs["ratio_cluster_over_box"] = {
            way: _ratio(
                costs["cluster"].get(way, {}).get("cpu_ms_per_frame"), costs["box"].get(way, {}).get("cpu_ms_per_frame")
            )
            for way in ("machine", "processes")
        }
        costs["live"] = {"box": box["live"], "cluster": in_cluster["live"]}
        save()
        scaling["one_node"] = capacity(args, trials, "one-node", one, url, timeline, pinner, save)
    finally:
        one.close()
    scaling["two_nodes"] = two_nodes(args, trials, url, timeline, pinner, save)
    one_live, two_live = scaling["one_node"]["largest_live"], scaling["two_nodes"]["largest_live"]
    scaling["ratio_two_over_one"] = round(two_live / one_live, 3) if one_live else None


def two_nodes(args, trials: list, url: str, timeline: CpuTimeline, pinner: CorePinner, save) -> dict:
    two = WatchedCluster("two", TWO_NODE_CORES, pinner, timeline, args.out / "cluster-two.stderr.txt")
    try:
        two.start()
        return capacity(args, trials, "two-nodes", two, url, timeline, pinner, save)
    finally:
        two.close()


def render(summary: dict) -> str:
    settings, costs, scaling = summary["settings"], summary.get("cost", {}), summary.get("capacity", {})
    backend = next((t.get("backend") for t in summary["trials"] if t.get("backend")), "?")
    lines = [
        f"cluster scaling: {settings['camera']}; model {settings['model']}, backend {backend}",
        f"  load average {summary['load_average_start']} -> {summary.get('load_average_end')}",
        f"  camera server, Ray head and driver on core {HOST_CORE}; one node: core {NODE_CORE}; "
        f"two nodes: cores {TWO_NODE_CORES}",
        f"capacity (live: {settings['live']} of {settings['window_s']:g} s after {settings['warmup_s']:g} s warm-up)",
        f"  {'nodes':<6}{'cores':<7}{'largest live':<14}tried (streams: fps min / dropped % max)",
    ]
    for nodes, key in ((1, "one_node"), (2, "two_nodes")):
        series = scaling.get(key)
        if series is None:
            lines.append(f"  {nodes:<6}{'-':<7}not run")
            continue
        tried = ", ".join(
            f"{t['streams']}: {t['fps_min']} / {t['dropped_pct_max']} {'ok' if t['live'] else 'NOT LIVE'}"
            for t in series["tried"]
        )
        cores = ",".join(map(str, series["cores"]))
        lines.append(f"  {nodes:<6}{cores:<7}{series['largest_live']:<14}{tried}")
    lines.append(f"  ratio two nodes / one node: {scaling.get('ratio_two_over_one')}")
    ratio, idle = costs.get("ratio_cluster_over_box") or {}, costs.get("ray_idle_cores") or {}
    lines.append(f"cost per stream-frame, {costs.get('streams')} streams, camera server excluded (ms CPU per frame)")
    lines.append(f"  {'':<20}{'machine':<10}{'processes':<11}frames/s  others' cores  live")
    for label, key in (("one box, dcrn run", "box"), ("cluster, one node", "cluster")):
        part = costs.get(key, {})
        ms = [part.get(way, {}).get("cpu_ms_per_frame") for way in ("machine", "processes")]
        lines.append(
            f"  {label:<20}{ms[0]!s:<10}{ms[1]!s:<11}{part.get('stream_frames_per_s')!s:<10}"
            f"{part.get('others_cores')!s:<15}{(costs.get('live') or {}).get(key)}"
        )
    lines.append(f"  {'ratio cluster / box':<20}{ratio.get('machine')!s:<10}{ratio.get('processes')!s:<11}")
    lines.append(f"  {'Ray idle (cores)':<20}{idle.get('machine')!s:<10}{idle.get('processes')!s:<11}")
    lines.append(
        "  machine: whole-machine CPU minus its baseline; processes: dcrn run and Ray's processes only; "
        "others' cores: use by processes not ours during the window (large: trust 'processes')"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    harness.run(main)
