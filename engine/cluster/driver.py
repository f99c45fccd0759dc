"""Many streams over a Ray cluster: ``dcrn run --cluster ADDRESS`` (docs/SCALING.md).

Every node that runs streams has one Ray actor, a :class:`~dcrn.engine.cluster.host.StreamHost`, that
runs the ordinary single-box :class:`Pipeline` once per stream placed there; only records (a few hundred
bytes per frame) travel back. The driver (:class:`ClusterRun`, the process that ran ``dcrn run``):

- places each stream on a node: among the nodes its pins allow, the one with the least load per CPU
  (:mod:`~dcrn.engine.cluster.placement`);
- pulls records from every host a few times a second and writes them to the sinks the user named, so
  one JSONL holds the whole site as on one box. Event and stats records gain a ``node`` field;
- writes a ``node_stats`` record per node every stats interval (streams, fps, drops, CPU) and logs it;
- notices a dead node (its host dies, or does not answer for ``node_timeout_s``), writes ``stream_lost``
  for each of its streams, starts them afresh on the surviving nodes (a new state: a state is never
  copied or mixed between streams) and writes ``stream_restored`` with where the stream moved when its
  first prediction arrives. Records already written stay written; what a dead host had not yet handed
  over (at most one poll, about 0.2 s of predictions) is lost with it.

Its loop, deadline, stats timer and shutdown path are the one-box pipeline's (:mod:`dcrn.engine.run.loop`).
Restarts are the driver's, not Ray's (``max_restarts=0``): the driver knows which nodes are alive, what
each stream is pinned to and how loaded each node is, and it writes the events that say what happened.

Credentials: a source URI goes to its host as a :class:`SecretURI`, whose ``repr`` is redacted; actor
names, log lines, records and errors use the redacted form. Nothing with a password is logged by the
driver or shown by Ray's dashboard (tests/engine/test_cluster.py reads both after a run). Joining Ray is
:mod:`~dcrn.engine.cluster.connect`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from dcrn.engine.cluster.connect import RayConnection
from dcrn.engine.cluster.host import SecretURI, checkpoint_blob, host_class
from dcrn.engine.cluster.placement import ClusterStream, NodeHost, NodeInfo, Pin, Placement
from dcrn.engine.errors import ClusterError
from dcrn.engine.frames import StreamEvent
from dcrn.engine.redact import redact
from dcrn.engine.run.loop import RunLoop, SinkSet
from dcrn.engine.run.records import event_record
from dcrn.engine.sinks.base import Sink
from dcrn.engine.sources.factory import source_name, unique_name
from dcrn.models.errors import ConfigError

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often records are pulled from every host
WAIT_LOG_S = 10.0  # a stream with no node to go to says so this often
OPENING_S = 15.0  # a host that was given a stream this recently may take this long to answer (it opens backends)
FIRST_ANSWER_S = 60.0  # a new host imports torch and loads the model before its first answer
RETRY_S = 1.0  # a stream with no node to go to is tried again this often


class ClusterRun:
    """Runs ``config``'s sources over a Ray cluster and writes every record to ``sinks`` on this machine.

    ``connect()`` (from the main thread) joins or starts the cluster; ``run()`` places the streams and
    runs until every stream ended, a limit was reached or ``stop()`` was called; it always stops the
    streams, writes what they still had, closes the sinks and leaves the cluster.
    """

    def __init__(
        self,
        config,
        sinks: Sequence[Sink] = (),
        *,
        address: str = "auto",
        pins: Sequence[Pin] = (),
        node_timeout_s: float = 3.0,
        poll_s: float = POLL_S,
    ) -> None:
        if node_timeout_s <= 0:
            raise ConfigError(f"node timeout must be positive, got {node_timeout_s}")
        self.config = config
        self.sinks = SinkSet(sinks, log=log)
        self.pins = list(pins)
        self.node_timeout_s = node_timeout_s
        self.poll_s = poll_s
        self.streams = [ClusterStream(name, SecretURI(uri), []) for name, uri in _names(config)]
        rois = config.rois or [None] * len(self.streams)  # each node crops its stream as one box would
        self._rois = {s.name: roi for s, roi in zip(self.streams, rois, strict=True) if roi is not None}
        for stream in self.streams:
            stream.pins = [p for p in self.pins if p.applies(stream.name)]
        for pin in self.pins:
            if not any(pin.applies(s.name) for s in self.streams):
                names = ", ".join(s.name for s in self.streams)
                raise ConfigError(f"--pin {pin}: no stream is called {pin.pattern!r} (streams: {names})")
        self.placement = Placement(self.streams)  # nodes, their hosts, and which node a stream goes to
        self.ray = RayConnection(address, node_timeout_s=node_timeout_s)
        self._runloop = RunLoop(
            duration_s=config.duration_s, stats_interval_s=config.stats_interval_s, poll_s=poll_s, log=log
        )
        self._host_class = None
        self._checkpoint = None  # ObjectRef of the checkpoint file's bytes, when the model is a file
        self._placed_waiting = 0.0  # monotonic time streams without a node were last tried

    # -- connection ------------------------------------------------------------------------------------

    def connect(self) -> None:
        self.ray.open()  # before Ray is imported here: it may have to tell Ray that this machine is 127.0.0.1
        import ray

        self._host_class = host_class()
        blob = checkpoint_blob(str(self.config.model))
        self._checkpoint = ray.put(blob) if blob is not None else None  # sent once, read by every host
        self._refresh_nodes()
        usable = self.placement.usable()
        log.info(
            "cluster: %s, %d node(s) for streams: %s",
            self.ray.describe(),
            len(usable),
            ", ".join(f"{n.label} ({n.cpus:g} CPU)" for n in usable) or "none",
        )

    def close(self) -> None:
        self.ray.close()

    def stop(self) -> None:
        """Ask ``run`` to finish; returns at once. Safe from any thread and from a signal handler."""
        self._runloop.stop()

    # -- placement -------------------------------------------------------------------------------------

    def _refresh_nodes(self) -> None:
        nodes = self.ray.nodes()
        if nodes is None:  # keep the last list; a head that is gone ends the run from head_alive
            if self.ray.head_alive(every_s=0.0):
                log.warning("the Ray head is slow to list its nodes; placing by the last list")
            return
        self.placement.nodes = nodes

    def _host_on(self, node: NodeInfo) -> NodeHost:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        host = self.placement.hosts.get(node.node_id)
        if host is None:
            actor = self._host_class.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
                num_cpus=0,  # placement is ours, by measured load; Ray's CPU count would cap streams per node
                max_restarts=0,  # a lost node's streams move; the driver writes what happened
                max_task_retries=0,
            ).remote(str(self.config.model), self._checkpoint)
            host = NodeHost(node, actor, time.monotonic())
            self.placement.hosts[node.node_id] = host
        return host

    def _place(self, stream: ClusterStream) -> bool:
        """Start ``stream`` on the least-loaded node it may use, as the placement knows them; False when there
        is none (yet)."""
        node = self.placement.choose(stream)
        if node is None:
            return False
        host = self._host_on(node)
        # The URI travels apart from the config, as a SecretURI: whatever shows the call's arguments shows
        # it redacted. The config carries the redacted form only.
        config = replace(
            self.config,
            sources=[redact(stream.uri)],
            names=[stream.name],
            rois=[self._rois.get(stream.name)] if self._rois else None,
            include_logits=self.config.include_logits or self.sinks.include_logits,
        )
        host.actor.start.remote(config, stream.name, stream.uri)
        stream.host = host
        stream.placed_at = time.monotonic()
        stream.frames = 0
        log.info("%s: placed on node %s (load %.2f per CPU)", stream.name, node.label, self.placement.load(node))
        return True

    def _place_waiting(self, streams: list[ClusterStream]) -> None:
        """Place streams that have no node, with the cluster's nodes as they are now (one look for all)."""
        self._placed_waiting = now = time.monotonic()
        self._refresh_nodes()
        for stream in streams:
            if not self._place(stream) and now - stream.waiting_logged > WAIT_LOG_S:
                stream.waiting_logged = now
                log.warning("%s: no node to run on%s; waiting", stream.name, " (pinned)" if stream.pins else "")

    # -- run -------------------------------------------------------------------------------------------

    def run(self) -> None:
        if not self.ray.connected:
            self.connect()
        shutdown = self._runloop.shutting_down(
            self.sinks, finish=self._finish_run, release=self.close, what="the cluster run"
        )
        with shutdown:
            self.sinks.open()
            missing = [s for s in self.streams if not self.placement.candidates(s)]
            if missing:
                raise ClusterError(
                    f"no node for {', '.join(s.name for s in missing)}: "
                    + ("check --pin" if self.pins else "the cluster has no node with a CPU")
                )
            for stream in self.streams:
                self._place(stream)
            done = "every stream has ended or reached its frame limit"
            self._runloop.run(
                self._poll, done=lambda: all(s.finished for s in self.streams), done_note=done, stats=self._stats
            )

    def _poll(self) -> bool:
        """One turn: place waiting streams, ask every host for its records (waiting up to ``poll_s``), take
        the answers, give up on hosts that stay silent. Always False: the loop then waits ``poll_s``."""
        import ray

        now = time.monotonic()
        if not self.ray.head_alive():
            return False  # nothing can be asked of the cluster now; the hosts keep their records meanwhile
        waiting = [s for s in self.streams if not s.finished and s.host is None]
        if waiting and now - self._placed_waiting >= RETRY_S:
            self._place_waiting(waiting)
        hosts = self.placement.hosts
        for host in list(hosts.values()):
            if host.pending is None:
                host.pending = host.actor.drain.remote()
                host.asked = now
        pending = [h.pending for h in hosts.values()]
        if not pending:
            return False
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=self.poll_s)
        ready_set = set(ready)
        for host in list(hosts.values()):
            if host.pending in ready_set:
                ref, host.pending = host.pending, None
                try:
                    answer = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    self._host_lost(host, _death_reason(exc))
                    continue
                self._take(host, answer)
            elif time.monotonic() - max(host.asked, host.answered or host.created) > self._answer_limit(host):
                self._host_lost(host, f"no answer for {self._answer_limit(host):g} s")
        return False

    def _answer_limit(self, host: NodeHost) -> float:
        """A new host imports torch and loads the model before it answers, and a host that was just given streams
        exports and compiles their graphs (on a busy one-core node that can take seconds): give both longer."""
        if host.answered is None:
            return max(FIRST_ANSWER_S, self.node_timeout_s)
        now = time.monotonic()
        opening = any(s.host is host and now - s.placed_at < OPENING_S for s in self.streams)
        return max(OPENING_S, self.node_timeout_s) if opening else self.node_timeout_s

    def _take(self, host: NodeHost, answer: dict) -> None:
        now = host.answered = time.monotonic()
        host.sample_cpu(answer["cpu_s"], answer["wall_s"], now)
        by_name = {s.name: s for s in self.streams if s.host is host}
        for name, part in answer["streams"].items():
            stream = by_name.get(name)
            if stream is None:  # a stream this host ran before it was moved (a slow node that came back)
                continue
            for record in part["records"]:
                self._forward(stream, record)
            if part["done"]:
                self._ended(stream, part["error"])

    def _ended(self, stream: ClusterStream, error: str | None) -> None:
        if error and not stream.ever_ran:
            raise ClusterError(f"{stream.name}: {error}")
        if error:
            self.sinks.write(self._event(stream, "stream_ended", f"on node {stream.host.node.label}: {error}"))
        stream.finished = True
        stream.host = None

    def _forward(self, stream: ClusterStream, record: dict) -> None:
        kind = record.get("type")
        if kind == "prediction":
            if stream.lost_at is not None:
                self._restored(stream)
            stream.frames += 1
            stream.ever_ran = True
        else:
            record["node"] = stream.host.node.label
        if kind == "stats":
            stream.last_stats = record
        self.sinks.write(record)

    def _host_lost(self, host: NodeHost, reason: str) -> None:
        """Every stream of ``host`` moves: stream_lost now, stream_restored at its first prediction elsewhere."""
        import ray

        node = host.node
        self.placement.suspect[node.node_id] = time.monotonic()
        self.placement.hosts.pop(node.node_id, None)
        try:
            ray.kill(host.actor, no_restart=True)
        except Exception:  # already dead
            log.debug("kill after loss", exc_info=True)
        moving = [s for s in self.streams if s.host is host]
        log.warning("node %s lost (%s): moving %d stream(s)", node.label, reason, len(moving))
        for stream in moving:
            detail = f"node {node.label} lost ({reason}); moving the stream, its state starts afresh"
            if stream.lost_at is None:  # one stream_lost per outage, however many moves it takes
                self.sinks.write(self._event(stream, "stream_lost", detail))
                stream.lost_at = time.monotonic()
                stream.moved_from = node
            stream.host = None
            stream.last_stats = {}
        self.sinks.flush()
        if self.ray.head_alive(every_s=0.0):  # a node lost with the head: the next poll says so
            self._place_waiting(moving)

    def _restored(self, stream: ClusterStream) -> None:
        source = stream.moved_from.label if stream.moved_from else "?"
        after = time.monotonic() - stream.lost_at
        detail = f"moved from node {source} to node {stream.host.node.label} after {after:.1f} s; state reset"
        log.info("%s: %s", stream.name, detail)
        record = self._event(stream, "stream_restored", detail)
        record["moved_from"] = source
        record["after_s"] = round(after, 3)
        self.sinks.write(record)
        stream.lost_at = None
        stream.moved_from = None

    def _event(self, stream: ClusterStream, event: str, detail: str) -> dict:
        record = event_record(StreamEvent(event, stream.name, 0, 0.0, detail=detail))
        return record | {"node": stream.host.node.label if stream.host else None}

    # -- stats -----------------------------------------------------------------------------------------

    def _stats(self) -> None:
        """A ``node_stats`` record and log line per node (every stats interval, and at the end)."""
        for record in self.node_stats():
            self.sinks.write(record)
            log.info(
                "node %s: %d stream(s), %.1f fps, %d dropped, latency p99 %s ms, CPU %.0f%% of %g",
                record["node"],
                record["streams"],
                record["fps"],
                record["dropped"],
                record["latency_ms_p99"],
                record["cpu_pct"],
                record["cpus"],
            )
        self.sinks.flush()

    def node_stats(self) -> list[dict]:
        """One ``node_stats`` record per node that runs streams, from its streams' last stats records."""
        records = []
        for host in sorted(self.placement.hosts.values(), key=lambda h: h.node.label):
            streams = [s for s in self.streams if s.host is host]
            if not streams:
                continue
            stats = [s.last_stats for s in streams if s.last_stats]
            p99 = [r["latency_ms_p99"] for r in stats if r.get("latency_ms_p99") is not None]
            cores = host.cores or 0.0
            records.append(
                {
                    "type": "node_stats",
                    "node": host.node.label,
                    "node_id": host.node.node_id,
                    "wall": round(time.time(), 4),
                    "cpus": host.node.cpus,
                    "streams": len(streams),
                    "names": [s.name for s in streams],
                    "fps": round(sum(r.get("fps", 0.0) for r in stats), 2),
                    "dropped": sum(r.get("dropped", 0) for r in stats),
                    "latency_ms_p99": max(p99) if p99 else None,
                    "cpu_pct": round(100.0 * cores, 1),
                    "load": round(cores / max(host.node.cpus, 1e-9), 3),
                }
            )
        return records

    # -- shutdown --------------------------------------------------------------------------------------

    def _finish_run(self) -> None:
        """Stop every stream and write what it still had, final node stats (then the sinks close)."""
        if self.ray.connected and self.ray.head_silent_since is None:  # with the head gone, so is every host
            self._stop_hosts()

    def _stop_hosts(self) -> None:
        import ray

        hosts = list(self.placement.hosts.values())
        refs = {h.actor.stop.remote(): h for h in hosts}
        wait_s = self.config.timeout_s + self.config.stall_s + 5.0
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=wait_s) if refs else ([], [])
        for ref in ready:
            host = refs[ref]
            try:
                answer = ray.get(ref)
            except ray.exceptions.RayActorError:
                continue
            for name, part in answer["streams"].items():
                stream = next((s for s in self.streams if s.name == name and s.host is host), None)
                if stream is not None:
                    for record in part["records"]:
                        self._forward(stream, record)
        self._stats()
        for host in hosts:
            ray.kill(host.actor, no_restart=True)
        for stream in self.streams:
            stream.finished = True
            stream.host = None
        self.placement.hosts.clear()


def _names(config) -> list[tuple[str, str]]:
    """(unique stream name, uri) per source, named as one box names them (``host-path``, ``-2`` on repeats)."""
    names = list(config.names) if config.names else [source_name(uri) for uri in config.sources]
    taken: set[str] = set()
    out = []
    for name, uri in zip(names, config.sources, strict=True):
        name = unique_name(name, taken)
        taken.add(name)
        out.append((name, uri))
    return out


def _death_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return redact(f"{type(exc).__name__}: {first}")[:200]


__all__ = ["ClusterError", "ClusterRun", "Pin"]
