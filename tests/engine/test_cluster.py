"""``dcrn run --cluster``: streams spread over a real Ray cluster, and moved when a node dies.

The multi-node test starts a real cluster on this machine (a head and two worker nodes, each its own
raylet with one Ray CPU and one core: tests/fixtures/cluster.py) and 8 RTSP sessions of the real test
camera, with a password in the URL, all on 127.0.0.1.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dcrn.engine.cluster.driver import ClusterRun
from dcrn.engine.cluster.placement import NodeHost, NodeInfo, Pin
from dcrn.engine.pipeline import PipelineConfig
from dcrn.models.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "pw-Cl9ster"
DCRN = [sys.executable, "-m", "dcrn.app"]


def dcrn(*args: str, env: dict | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run([*DCRN, *args], capture_output=True, text=True, timeout=timeout, env=env)


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]  # the line being written may be partial


# -- options, names, errors --------------------------------------------------------------------------------


def test_pin_selectors():
    pin = Pin.parse("gate-*=ip:10.0.1.0/24")
    assert (pin.pattern, pin.kind, pin.value) == ("gate-*", "ip", "10.0.1.0/24")
    assert pin.applies("gate-3") and not pin.applies("yard")
    inside = NodeInfo("aa11", "10.0.1.7", {"CPU": 4.0})
    outside = NodeInfo("bb22", "10.0.2.7", {"CPU": 4.0, "GPU": 1.0})
    assert pin.allows(inside) and not pin.allows(outside)
    assert Pin.parse("*=resource:GPU").allows(outside) and not Pin.parse("*=resource:GPU").allows(inside)
    assert Pin.parse("cam=node:bb2").allows(outside)
    for bad in ("gate", "gate=", "gate=gpu", "gate=ip:not-an-address", "=node:aa", "gate=host:x"):
        with pytest.raises(ConfigError):
            Pin.parse(bad)


def test_streams_are_named_as_on_one_box_and_pins_must_match_one():
    uris = ["rtsp://u:p@10.0.0.5/live", "rtsp://u:p@10.0.0.5/live", "synthetic:", "3", "/videos/gate 1.mp4"]
    run = ClusterRun(PipelineConfig(sources=uris), address="auto")
    assert [s.name for s in run.streams] == ["10.0.0.5-live", "10.0.0.5-live-2", "synthetic", "cam3", "gate-1"]
    assert repr(run.streams[0].uri) == "'rtsp://***@10.0.0.5/live'"  # whatever shows the argument hides it
    assert str(run.streams[0].uri) == "rtsp://u:p@10.0.0.5/live"
    with pytest.raises(ConfigError, match="no stream is called 'yard'"):
        ClusterRun(PipelineConfig(sources=uris), pins=[Pin.parse("yard=resource:GPU")])


def placement_with(nodes, sources=4, pins=()):
    """A ClusterRun's placement that knows ``nodes`` (no Ray: plain arithmetic on what hosts measured)."""
    run = ClusterRun(PipelineConfig(sources=[f"synthetic:?seed={k}" for k in range(sources)]), pins=pins)
    placement = run.placement
    placement.nodes = {n.node_id: n for n in nodes}
    for node in nodes:
        placement.hosts[node.node_id] = NodeHost(node, actor=None, created=0.0)
    return placement


def put(placement, stream, node_id, at):
    stream.host, stream.placed_at = placement.hosts[node_id], at


def test_placement_goes_by_measured_load_per_cpu():
    small, big = NodeInfo("a" * 8, "10.0.0.1", {"CPU": 1.0}), NodeInfo("b" * 8, "10.0.0.2", {"CPU": 2.0})
    placement = placement_with([small, big])
    first, second, third, fourth = placement.streams
    # Nothing measured: every stream counts the same, per CPU of its node.
    assert placement.choose(first) is big  # both empty: the larger node has more room
    put(placement, first, big.node_id, at=0.0)
    assert placement.choose(second) is small  # 0 against 0.5 stream per CPU
    put(placement, second, small.node_id, at=0.0)
    assert placement.choose(third) is big  # 1 stream per CPU against 0.5
    put(placement, third, big.node_id, at=0.0)
    assert placement.load(small) == placement.load(big)  # 1 stream per CPU each
    # Measured: the small node's stream turns out cheap, the big node's two expensive.
    placement.hosts[small.node_id].cores, placement.hosts[small.node_id].measured_since = 0.1, 1.0
    placement.hosts[big.node_id].cores, placement.hosts[big.node_id].measured_since = 1.6, 1.0
    assert placement.load(small) == pytest.approx(0.1) and placement.load(big) == pytest.approx(0.8)
    assert placement.stream_cost() == pytest.approx(0.45)  # median of 0.1 and 0.8 per stream
    assert placement.choose(fourth) is small
    # A stream placed after the measurement began counts at the typical cost until it is measured.
    put(placement, fourth, small.node_id, at=5.0)
    assert placement.load(small) == pytest.approx(0.1 + 0.45)


def test_placement_keeps_pins_and_avoids_a_node_that_just_lost_streams():
    gpu = NodeInfo("g" * 8, "10.0.1.5", {"CPU": 1.0, "GPU": 1.0})
    plain = NodeInfo("p" * 8, "10.0.2.5", {"CPU": 8.0})
    placement = placement_with([gpu, plain], sources=2, pins=[Pin.parse("synthetic-2=resource:GPU")])
    free, pinned = placement.streams
    assert placement.choose(free) is plain and placement.choose(pinned) is gpu
    put(placement, free, plain.node_id, at=0.0)
    put(placement, pinned, gpu.node_id, at=0.0)
    assert placement.choose(pinned) is gpu  # however loaded, it is the only node the pin allows
    placement.suspect[plain.node_id] = time.monotonic()  # streams were just lost there
    del placement.nodes[gpu.node_id]
    assert placement.choose(free) is plain  # suspect, but the only node left: better than none
    assert placement.choose(pinned) is None  # waits for a GPU node


def test_nobody_at_the_address_is_one_line_and_exit_2(tmp_path):
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    result = dcrn("run", "--cluster", f"127.0.0.1:{port}", "--source", "synthetic:", "--max-frames", "5")
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 30
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"nothing answers at 127.0.0.1:{port}" in lines[0], result.stderr
    result = dcrn("run", "--pin", "a=resource:GPU", "--source", "synthetic:", "--max-frames", "5")
    assert result.returncode == 2 and "--pin needs --cluster" in result.stderr


@pytest.mark.slow
def test_cluster_auto_runs_an_embedded_ray_and_writes_like_one_box(tmp_path):
    out = tmp_path / "site.jsonl"
    model = tmp_path / "mine.pt"  # a checkpoint file travels to the nodes (they may not share a disk)
    model.write_bytes((REPO / "models" / "shipped" / "default.pt").read_bytes())
    env = dict(os.environ, DCRN_CACHE_DIR=str(tmp_path / "cache"))
    result = dcrn(
        "run",
        "--cluster",
        "auto",
        "--model",
        str(model),
        "--source",
        "synthetic:",
        "--source",
        "synthetic:?seed=4",
        "--max-frames",
        "45",
        "--stats-interval",
        "1",
        "--sink",
        f"jsonl:{out}",
        timeout=180,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_records(out)
    predictions = [r for r in records if r["type"] == "prediction"]
    assert {s: sum(r["stream"] == s for r in predictions) for s in ("synthetic", "synthetic-2")} == {
        "synthetic": 45,
        "synthetic-2": 45,
    }
    stats = [r for r in records if r["type"] == "stats"]
    assert stats and all(r["node"] for r in stats)
    nodes = [r for r in records if r["type"] == "node_stats"]
    assert nodes and nodes[-1]["streams"] == 2 and nodes[-1]["cpus"] >= 1
    assert "embedded Ray" in result.stderr
    (copy,) = (tmp_path / "cache" / "cluster-models").iterdir()
    assert copy.name.endswith("-mine.pt") and copy.read_bytes() == model.read_bytes()


# -- a real multi-node cluster ------------------------------------------------------------------------------


def wait_for(condition, timeout_s: float, what: str, log=None, poll_s: float = 0.5):
    """``condition()``'s first true value within ``timeout_s``; on timeout an error with ``log()``'s text."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}" + (f"\n{log()}" if log else ""))


def dashboard_text(cluster) -> str:
    """What the dashboard shows of actors and tasks (the state API, with details)."""
    texts = []
    for path in ("/api/v0/actors?detail=1&limit=1000", "/api/v0/tasks?detail=1&limit=1000"):
        request = urllib.request.Request(
            f"http://{cluster.dashboard}{path}", headers={"Authorization": f"Bearer {cluster.info['token']}"}
        )
        with urllib.request.urlopen(request, timeout=20) as response:
            texts.append(response.read().decode())
    return "\n".join(texts)


@pytest.mark.slow
@pytest.mark.rtsp
def test_streams_spread_over_two_nodes_and_move_when_one_dies(tmp_path):
    from tests.fixtures.cluster import LocalCluster
    from tests.fixtures.rtsp import RtspServer, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "site.jsonl"
    with (
        RtspServer(user="admin", password=PASSWORD, fps=25) as camera,
        LocalCluster(workers=2, dashboard=True) as cluster,
    ):
        worker0, worker1 = cluster.node_ids
        args = [*DCRN, "run", "--cluster", cluster.address, "--duration", "40", "--stats-interval", "1"]
        args += ["--sink", f"jsonl:{out}", "--pin", "127.0.0.1-test-8=node:" + worker1[:12]]
        for _ in range(8):
            args += ["--source", camera.url]
        log_path = tmp_path / "driver.log"  # a file, not a pipe: nobody reads a pipe while the driver runs
        driver = subprocess.Popen(args, env=cluster.env(), stdout=subprocess.DEVNULL, stderr=log_path.open("w"))

        def driver_log() -> str:  # and the hosts' own logs: why a node stayed silent is in them
            return log_path.read_text()[-4000:] + "\n" + cluster.worker_logs()

        try:
            names = {"127.0.0.1-test", *(f"127.0.0.1-test-{k}" for k in range(2, 9))}

            def all_live():
                seen = {r["stream"] for r in read_records(out) if r["type"] == "prediction"}
                return seen >= names

            wait_for(all_live, 90, "predictions from all 8 streams", driver_log)

            # Spread: each node hosts some of the streams, the pinned one on worker 1.
            def stats_nodes():
                return {r["stream"]: r["node"] for r in read_records(out) if r["type"] == "stats"}

            wait_for(lambda: set(stats_nodes()) >= names, 15, "a stats record from every stream", driver_log)
            node_of = stats_nodes()
            labels = {n: f"127.0.0.1/{n[:8]}" for n in (worker0, worker1)}
            assert node_of["127.0.0.1-test-8"] == labels[worker1], driver_log()
            on0 = sorted(s for s, n in node_of.items() if n == labels[worker0])
            assert 3 <= len(on0) <= 5, f"{node_of}\n{driver_log()}"  # balanced: 4 and 4, give or take the pinned one
            shown = dashboard_text(cluster)
            assert "StreamHost" in shown and PASSWORD not in shown

            killed_at = time.time()
            assert cluster.kill(0)["killed"] == 0

            def moved():
                records = read_records(out)
                restored = {r["stream"] for r in records if r.get("event") == "stream_restored"}
                return restored >= set(on0)

            wait_for(moved, 20, "the lost node's streams restored on the other node", driver_log)
            time.sleep(3)  # predictions keep coming on the surviving node
            rc = driver.wait(90)
            stderr = log_path.read_text()
            logs = cluster.logs_text()
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait(10)
    assert rc == 0, stderr[-3000:]
    records = read_records(out)
    assert len(records) == len(out.read_text().splitlines())  # every line whole
    lost = {r["stream"]: r for r in records if r.get("event") == "stream_lost"}
    restored = {r["stream"]: r for r in records if r.get("event") == "stream_restored"}
    assert set(lost) == set(on0) == set(restored)  # only the dead node's streams moved
    for name in on0:
        assert lost[name]["node"] == labels[worker0] and labels[worker0] in lost[name]["detail"]
        assert restored[name]["node"] == labels[worker1] and restored[name]["moved_from"] == labels[worker0]
        assert restored[name]["after_s"] < 10.0
        assert restored[name]["wall"] - killed_at < 10.0
        after = [
            r
            for r in records
            if r["type"] == "prediction" and r["stream"] == name and r["wall"] > restored[name]["wall"]
        ]
        assert len(after) >= 25, f"{name}: {len(after)} predictions after the move"  # live again, at 25 fps
    # Every stream's records before the kill stayed; the surviving node's streams never stopped.
    for name in names - set(on0):
        times = [r["wall"] for r in records if r["type"] == "prediction" and r["stream"] == name]
        assert max(b - a for a, b in itertools.pairwise(times)) < 2.0, name
    nodes = [r for r in records if r["type"] == "node_stats"]
    assert {r["node"] for r in nodes} == set(labels.values())
    assert nodes[-1]["node"] == labels[worker1] and nodes[-1]["streams"] == 8
    # The password appears nowhere: records, the driver's log, Ray's logs of every node.
    for text in (out.read_text(), stderr, logs):
        assert PASSWORD not in text


@pytest.mark.slow
def test_a_lost_head_ends_the_run_with_one_line_and_keeps_what_was_written(tmp_path):
    from tests.fixtures.cluster import LocalCluster

    out = tmp_path / "site.jsonl"
    cluster = LocalCluster(workers=1)
    try:
        cluster.start()
        args = [*DCRN, "run", "--cluster", cluster.address, "--source", "synthetic:", "--sink", f"jsonl:{out}"]
        driver = subprocess.Popen(args, env=cluster.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: sum(r["type"] == "prediction" for r in read_records(out)) >= 15, 90, "15 predictions")
    finally:
        cluster.close()  # the whole cluster, head included, goes away
    gone = time.monotonic()
    try:
        rc = driver.wait(45)  # Ray alone would end the driver after a minute, with no word on the sinks
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(10)
    stderr = driver.stderr.read()
    assert rc == 2, stderr[-2000:]
    assert time.monotonic() - gone < 30
    assert stderr.strip().splitlines()[-1].startswith("dcrn run: error: lost the Ray cluster")
    records = read_records(out)
    assert len(records) == len(out.read_text().splitlines())  # every line whole
    assert sum(r["type"] == "prediction" for r in records) >= 15  # what was written before stays
    assert any(r.get("event") == "stream_lost" for r in records)
