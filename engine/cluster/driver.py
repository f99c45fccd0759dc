"""Many streams over a Ray cluster: ``dcrn run --cluster ADDRESS``.

Every node that runs streams has one Ray actor, a :class:`StreamHost`. It runs the ordinary single-box
:class:`Pipeline` once per stream placed there, so a stream's capture, its recurrent state and its
postprocessing live in one process next to its frames; only records (a few hundred bytes per frame)
travel back. The driver (:class:`ClusterRun`, the process that ran ``dcrn run``):

- places each stream on a node: among the nodes its pins allow, the one with the least load per CPU,
  load being the CPU its host process measurably uses (streams not yet measured count as the median
  cost per stream of the hosts that are);
- pulls records from every host a few times a second and writes them to the sinks the user named, so
  one JSONL holds the whole site as on one box. Event and stats records gain a ``node`` field;
- writes a ``node_stats`` record per node every stats interval (streams, fps, drops, CPU) and logs it;
- notices a dead node (its host dies, or does not answer for ``node_timeout_s``), writes ``stream_lost``
  for each of its streams, starts them afresh on the surviving nodes (a new state: a state is never
  copied or mixed between streams) and writes ``stream_restored`` with where the stream moved when its
  first prediction arrives. Records already written stay written; what a dead host had not yet handed
  over (at most one poll, about 0.2 s of predictions) is lost with it.

Restarts are the driver's, not Ray's (``max_restarts=0``): the driver knows which nodes are alive, what
each stream is pinned to and how loaded each node is, and it writes the events that say what happened.
A host that is already running takes a moved stream in about the time its camera takes to open: no
process start, no torch import.

Credentials: a source URI goes to its host as a :class:`SecretURI`, whose ``repr`` is redacted; actor
names, log lines, records and errors use the redacted form. Nothing with a password is logged by the
driver or shown by Ray's dashboard (tests/engine/test_cluster.py reads both after a run).

Addresses: ``auto`` joins the cluster in ``$RAY_ADDRESS`` when it is set, else starts an embedded Ray on
this machine for the run (so the command works on a laptop); ``HOST:PORT`` joins a running cluster
(``ray start --head`` on one machine, ``ray start --address HOST:PORT`` on the others, each with this
project installed).
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import logging
import os
import socket
import statistics
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from dcrn.engine.frames import StreamEvent
from dcrn.engine.pipeline import event_record
from dcrn.engine.redact import redact
from dcrn.engine.sinks import Sink
from dcrn.engine.sources.factory import quiet_native_logs, source_name, unique_name
from dcrn.models.errors import ConfigError, DcrnError

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often records are pulled from every actor
DRAIN_MAX = 5000  # records per pull, at most
BUFFER_MAX = 100_000  # records an actor keeps for the driver before it drops the oldest
SUSPECT_S = 30.0  # a node where a stream was lost gets no new stream for this long (unless it is the only one)
WAIT_LOG_S = 10.0  # a stream with no node to go to says so this often
COST_UNKNOWN = 0.1  # CPU (cores) assumed for a stream before any stream was measured
CPU_SAMPLE_S = 2.0  # a host's CPU use is measured over this long
OPENING_S = 15.0  # a host that was given a stream this recently may take this long to answer (it opens backends)
RETRY_S = 1.0  # a stream with no node to go to is tried again this often
NODES_TIMEOUT_S = 5.0  # the head lists its nodes within this time, or is taken to be gone
EMBEDDED_STORE_BYTES = 256 * 1024 * 1024  # only records and one checkpoint pass through Ray's object store
# Set to "0" before Ray is imported, Ray takes this machine's address to be 127.0.0.1 (its only effect).
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class ClusterError(DcrnError, RuntimeError):
    """The cluster cannot be reached, has no node for a stream, or a stream failed to start."""


class SecretURI(str):
    """A source URI that shows itself redacted (``repr``, ``str()`` stays the real one for the source)."""

    def __repr__(self) -> str:
        return repr(redact(str(self)))


# -- pinning ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    """Streams whose name matches ``pattern`` (a glob) may only run on nodes that match ``selector``.

    Selectors: ``resource:NAME`` (a node that has that Ray resource: ``GPU``, or a custom one given with
    ``ray start --resources '{"site-a": 1}'``), ``ip:CIDR`` or ``ip:ADDRESS`` (the node's address, e.g. a
    site's subnet), ``node:PREFIX`` (a Ray node id, or its start).
    """

    pattern: str
    kind: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Pin:
        pattern, sep, selector = text.partition("=")
        kind, colon, value = selector.partition(":")
        if not sep or not pattern or not colon or not value or kind not in ("resource", "ip", "node"):
            raise ConfigError(f"--pin wants STREAM=resource:NAME, STREAM=ip:CIDR or STREAM=node:ID, got {text!r}")
        if kind == "ip":
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ConfigError(f"--pin {text!r}: {value!r} is not an address or network") from None
        return cls(pattern, kind, value)

    def applies(self, stream: str) -> bool:
        return fnmatch.fnmatchcase(stream, self.pattern)

    def allows(self, node: NodeInfo) -> bool:
        if self.kind == "resource":
            return node.resources.get(self.value, 0) > 0
        if self.kind == "ip":
            try:
                return ipaddress.ip_address(node.address) in ipaddress.ip_network(self.value, strict=False)
            except ValueError:
                return False
        return node.node_id.startswith(self.value)

    def __str__(self) -> str:
        return f"{self.pattern}={self.kind}:{self.value}"


@dataclass
class NodeInfo:
    node_id: str
    address: str
    resources: dict[str, float]

    @property
    def cpus(self) -> float:
        return float(self.resources.get("CPU", 0.0))

    @property
    def label(self) -> str:
        """How records and log lines name the node: address and the start of its id (several per host)."""
        return f"{self.address}/{self.node_id[:8]}"


# -- the actor: one stream, its state and its pipeline ------------------------------------------------------


class BufferSink(Sink):
    """Keeps records in memory for the driver to take (newest kept when the driver falls behind)."""

    spec = "cluster-buffer"

    def __init__(self, maxlen: int = BUFFER_MAX) -> None:
        super().__init__(include_logits=False)
        self.records: deque[dict] = deque(maxlen=maxlen)
        self.overflow = 0

    def _open(self):
        return self  # no file; Sink only needs a handle that is not None

    def _close(self, handle) -> None:
        pass

    def write(self, record: dict) -> None:
        if len(self.records) == self.records.maxlen:
            self.overflow += 1
        self.records.append(record)  # logits stay: the driver's sinks decide (they are its sinks' option)

    def flush(self) -> None:
        pass

    def take(self, limit: int) -> list[dict]:
        out = []
        while self.records and len(out) < limit:
            out.append(self.records.popleft())
        return out


class StreamHost:
    """One per node: owns the streams placed there, each a :class:`Pipeline` on threads of this process.

    Created through :func:`host_class` (a Ray actor). Each stream keeps its own source, ring, recurrent
    state and postprocessing, exactly as on one box; the process, its imports and the model file are
    shared, so a stream that moves here starts in about the time its camera takes to open.
    ``drain()`` answers at once; ``stop(name)`` ends a pipeline the way SIGTERM ends ``dcrn run`` (queued
    frames finished, running action ended, final stats).
    """

    def __init__(self, model: str, checkpoint: tuple[str, str, bytes] | None = None) -> None:
        import ray

        from dcrn.engine.pipeline import Pipeline
        from dcrn.models.checkpoint import load_checkpoint

        _quiet_logs()
        self._pipeline_class = Pipeline
        self.node_id = ray.get_runtime_context().get_node_id()
        self.streams: dict[str, _Hosted] = {}
        self._lock = threading.Lock()
        self._cpu0 = time.process_time()
        self._wall0 = time.monotonic()
        self.model = _materialise(checkpoint) if checkpoint is not None else model
        try:  # warm: imports, the checkpoint file and its graph cache, before any stream needs them
            load_checkpoint(self.model)
        except Exception:
            log.debug("warming with %s failed; the stream will say why", self.model, exc_info=True)

    def start(self, config, name: str, uri: SecretURI) -> None:
        hosted = _Hosted(name)
        with self._lock:
            self.streams[name] = hosted
        config = replace(config, sources=[str(uri)], names=[name], model=self.model)
        try:
            hosted.pipeline = self._pipeline_class(config, [hosted.sink])
        except BaseException as exc:
            hosted.fail(exc)
            return
        hosted.thread = threading.Thread(target=hosted.run, name=f"dcrn-{name}", daemon=True)
        hosted.thread.start()

    def drain(self, limit: int = DRAIN_MAX) -> dict:
        with self._lock:
            hosted = list(self.streams.values())
        out = {}
        for stream in hosted:
            done = stream.done  # read before taking: records written before it was set are in this batch
            records = stream.sink.take(limit)
            out[stream.name] = {
                "records": records,
                "done": done and not stream.sink.records,
                "error": stream.error,
                "overflow": stream.sink.overflow,
            }
            if out[stream.name]["done"]:
                with self._lock:
                    self.streams.pop(stream.name, None)
        return {"streams": out, "cpu_s": time.process_time() - self._cpu0, "wall_s": time.monotonic() - self._wall0}

    def stop(self, names: list[str] | None = None, timeout_s: float = 10.0) -> dict:
        with self._lock:
            hosted = [s for s in self.streams.values() if names is None or s.name in names]
        for stream in hosted:
            if stream.pipeline is not None:
                stream.pipeline.stop()
        deadline = time.monotonic() + timeout_s
        for stream in hosted:
            if stream.thread is not None:
                stream.thread.join(max(0.0, deadline - time.monotonic()))
        return self.drain(limit=BUFFER_MAX)

    def where(self) -> tuple[str, int]:
        return self.node_id, os.getpid()

    def __repr__(self) -> str:  # the dashboard's name for the actor: never a URI
        return f"StreamHost({self.node_id[:8]})"


@dataclass(eq=False)
class _Hosted:
    """A stream inside a :class:`StreamHost`."""

    name: str
    sink: BufferSink = field(default_factory=BufferSink)
    pipeline: object | None = None
    thread: threading.Thread | None = None
    error: str | None = None
    done: bool = False

    def run(self) -> None:
        try:
            self.pipeline.run()
        except BaseException as exc:
            self.fail(exc)
        finally:
            self.done = True

    def fail(self, exc: BaseException) -> None:
        self.error = redact(str(exc) or type(exc).__name__)
        self.done = True


def _materialise(checkpoint: tuple[str, str, bytes]) -> str:
    """The driver's checkpoint file as a file on this node (cached by content), its path."""
    name, digest, data = checkpoint
    folder = Path(os.environ.get("DCRN_CACHE_DIR") or Path.home() / ".cache" / "dcrn") / "cluster-models"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}-{name}"
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # whole or not at all, also with two hosts on one machine
    return str(path)


def _checkpoint_blob(model: str) -> tuple[str, str, bytes] | None:
    """A checkpoint file given by path travels with the hosts (other machines do not have it); a shipped
    model name does not need to."""
    path = Path(model)
    if not path.is_file():
        return None
    data = path.read_bytes()
    return path.name, hashlib.sha256(data).hexdigest()[:16], data


def _quiet_logs() -> None:
    quiet_native_logs()  # a host's environment is its node's, not the driver's
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def host_class():
    import ray

    return ray.remote(max_concurrency=4)(StreamHost)


# -- the driver --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Host:
    """The driver's handle on one node's :class:`StreamHost`."""

    node: NodeInfo
    actor: object
    created: float
    pending: object | None = None  # an ObjectRef of drain() not yet answered
    asked: float = 0.0  # monotonic time the pending drain was sent
    answered: float | None = None  # monotonic time of the last answer (None: not answered yet)
    cpu: tuple[float, float] | None = None  # (cpu_s, wall_s) at the start of the current CPU sample
    sample_start: float = 0.0  # monotonic time the current CPU sample began
    cores: float | None = None  # CPU cores the host process used over the last complete sample
    measured_since: float = 0.0  # monotonic start of that sample: streams placed before it ran through it


@dataclass(eq=False)
class _ClusterStream:
    name: str
    uri: SecretURI
    pins: list[Pin]
    host: _Host | None = None
    placed_at: float = 0.0  # monotonic time of the current placement
    frames: int = 0  # predictions seen on this placement
    ever_ran: bool = False  # a prediction arrived on some placement
    lost_at: float | None = None  # monotonic time of a stream_lost not yet followed by stream_restored
    moved_from: NodeInfo | None = None
    waiting_logged: float = 0.0
    finished: bool = False
    last_stats: dict = field(default_factory=dict)


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
        self.sinks = list(sinks)
        self.address = address
        self.pins = list(pins)
        self.node_timeout_s = node_timeout_s
        self.poll_s = poll_s
        self.streams = [_ClusterStream(name, SecretURI(uri), []) for name, uri in _names(config)]
        for stream in self.streams:
            stream.pins = [p for p in self.pins if p.applies(stream.name)]
        for pin in self.pins:
            if not any(pin.applies(s.name) for s in self.streams):
                names = ", ".join(s.name for s in self.streams)
                raise ConfigError(f"--pin {pin}: no stream is called {pin.pattern!r} (streams: {names})")
        self.nodes: dict[str, NodeInfo] = {}
        self.hosts: dict[str, _Host] = {}  # node id -> its StreamHost
        self.suspect: dict[str, float] = {}  # node id -> monotonic time streams were lost there
        self._stop_requested = False
        self._wake = threading.Event()
        self._connected = False
        self._owns_ray = False
        self._host_class = None
        self._checkpoint = None  # ObjectRef of the checkpoint file's bytes, when the model is a file
        self._gcs: str | None = None  # HOST:PORT of the head's control service
        self._head_checked = 0.0  # monotonic time of the last check that the head answers
        self._head_silent_since: float | None = None
        self._placed_waiting = 0.0  # monotonic time streams without a node were last tried
        self._last_stats = 0.0

    # -- connection ------------------------------------------------------------------------------------

    def connect(self) -> None:
        if self.address != "auto" or os.environ.get("RAY_ADDRESS"):
            _check_reachable(self.address if self.address != "auto" else os.environ["RAY_ADDRESS"])
        else:  # an embedded instance listens on the loopback interface only: nothing outside sees it
            os.environ.setdefault(LOOPBACK_ONLY, "0")
        try:
            import ray
        except ImportError:
            raise ClusterError(
                "--cluster needs Ray: pip install 'dcrn-live[cluster]' (or pip install 'ray[default]')"
            ) from None
        if not ray.is_initialized():
            address = self.address
            if address == "auto" and not os.environ.get("RAY_ADDRESS"):
                self._owns_ray = True
                address = "local"  # a new embedded instance for this run, whatever else runs here
            elif address == "auto":
                address = os.environ["RAY_ADDRESS"]
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the site
            logging.getLogger("ray").setLevel(logging.ERROR)  # its start-up notes are not the user's business
            try:
                embedded = {"object_store_memory": EMBEDDED_STORE_BYTES} if self._owns_ray else {}
                ray.init(
                    address=address,
                    **embedded,
                    include_dashboard=False if self._owns_ray else None,
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                )
            except Exception as exc:  # ConnectionError, RuntimeError, ValueError: all mean "no cluster there"
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ClusterError(f"cannot join the Ray cluster at {redact(self.address)}: {first}") from None
        self._connected = True
        self._gcs = ray.get_runtime_context().gcs_address  # the head, watched by _head_alive()
        self._host_class = host_class()
        blob = _checkpoint_blob(str(self.config.model))
        self._checkpoint = ray.put(blob) if blob is not None else None  # sent once, read by every host
        self._refresh_nodes()
        where = "an embedded Ray on this machine" if self._owns_ray else f"the Ray cluster at {self.address}"
        usable = self._usable()
        log.info(
            "cluster: %s, %d node(s) for streams: %s",
            where,
            len(usable),
            ", ".join(f"{n.label} ({n.cpus:g} CPU)" for n in usable) or "none",
        )

    def close(self) -> None:
        if self._connected:
            import ray

            ray.shutdown()  # an embedded instance stops; a joined cluster stays up
            self._connected = False

    def stop(self) -> None:
        """Ask ``run`` to finish; returns at once. Safe from any thread and from a signal handler."""
        self._stop_requested = True
        threading.Thread(target=self._wake.set, name="dcrn-stop", daemon=True).start()

    # -- nodes and placement ---------------------------------------------------------------------------

    def _refresh_nodes(self) -> None:
        import ray

        answer: list = []
        asking = threading.Thread(target=lambda: answer.append(ray.nodes()), name="dcrn-nodes", daemon=True)
        asking.start()
        asking.join(NODES_TIMEOUT_S)  # Ray waits a minute for a head that is gone; this run does not
        if not answer:  # keep the last list; a head that is gone ends the run from _head_alive
            if self._head_alive(every_s=0.0):
                log.warning("the Ray head is slow to list its nodes; placing by the last list")
            return
        nodes = {}
        for entry in answer[0]:
            if entry.get("Alive"):
                info = NodeInfo(entry["NodeID"], entry.get("NodeManagerAddress", "?"), dict(entry.get("Resources", {})))
                nodes[info.node_id] = info
        self.nodes = nodes

    def _usable(self) -> list[NodeInfo]:
        """Alive nodes with a CPU to run streams on (a head started with ``--num-cpus 0`` takes none)."""
        return [n for n in self.nodes.values() if n.cpus > 0]

    def _candidates(self, stream: _ClusterStream) -> list[NodeInfo]:
        nodes = [n for n in self._usable() if all(p.allows(n) for p in stream.pins)]
        now = time.monotonic()
        trusted = [n for n in nodes if now - self.suspect.get(n.node_id, -1e9) > SUSPECT_S]
        return trusted or nodes

    def _measured(self, host: _Host) -> list[_ClusterStream]:
        """The streams of ``host`` that ran through its last CPU sample."""
        if host.cores is None:
            return []
        return [s for s in self.streams if s.host is host and s.placed_at <= host.measured_since]

    def _stream_cost(self) -> float:
        """CPU cores one stream takes: the median over hosts of measured cores per measured stream."""
        samples = [h.cores / len(m) for h in self.hosts.values() if (m := self._measured(h))]
        return statistics.median(samples) if samples else COST_UNKNOWN

    def _load(self, node: NodeInfo) -> float:
        """CPU cores in use on ``node`` per CPU: the host's measured use, plus the typical cost of each stream
        placed there since that measurement began (just started, or moved there after a loss)."""
        host = self.hosts.get(node.node_id)
        on_node = [s for s in self.streams if s.host is not None and s.host.node.node_id == node.node_id]
        measured = self._measured(host) if host is not None else []
        used = (host.cores if measured else 0.0) + (len(on_node) - len(measured)) * self._stream_cost()
        return used / max(node.cpus, 1e-9)

    def _choose(self, stream: _ClusterStream) -> NodeInfo | None:
        """The node ``stream`` goes to: the least loaded per CPU among those it may use, the larger one on a
        tie (None: no node it may use now)."""
        candidates = self._candidates(stream)
        if not candidates:
            return None
        return min(candidates, key=lambda n: (round(self._load(n), 3), -n.cpus, n.node_id))  # ties: more room

    def _host_on(self, node: NodeInfo) -> _Host:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        host = self.hosts.get(node.node_id)
        if host is None:
            actor = self._host_class.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
                num_cpus=0,  # placement is ours, by measured load; Ray's CPU count would cap streams per node
                max_restarts=0,  # a lost node's streams move; the driver writes what happened
                max_task_retries=0,
            ).remote(str(self.config.model), self._checkpoint)
            host = _Host(node, actor, time.monotonic())
            self.hosts[node.node_id] = host
        return host

    def _place(self, stream: _ClusterStream) -> bool:
        """Start ``stream`` on the least-loaded node it may use, as ``self.nodes`` knows them; False when there
        is none (yet)."""
        node = self._choose(stream)
        if node is None:
            return False
        host = self._host_on(node)
        # The URI travels apart from the config, as a SecretURI: whatever shows the call's arguments shows
        # it redacted. The config carries the redacted form only.
        config = replace(
            self.config,
            sources=[redact(stream.uri)],
            names=[stream.name],
            include_logits=self.config.include_logits or any(s.include_logits for s in self.sinks),
        )
        host.actor.start.remote(config, stream.name, stream.uri)
        stream.host = host
        stream.placed_at = time.monotonic()
        stream.frames = 0
        log.info("%s: placed on node %s (load %.2f per CPU)", stream.name, node.label, self._load(node))
        return True

    # -- run -------------------------------------------------------------------------------------------

    def run(self) -> None:
        if not self._connected:
            self.connect()
        try:
            for sink in self.sinks:
                sink.open()
            missing = [s for s in self.streams if not self._candidates(s)]
            if missing:
                raise ClusterError(
                    f"no node for {', '.join(s.name for s in missing)}: "
                    + ("check --pin" if self.pins else "the cluster has no node with a CPU")
                )
            for stream in self.streams:
                self._place(stream)
            self._loop()
        except BaseException:
            self._shutdown(raising=True)
            raise
        self._shutdown(raising=False)

    def _loop(self) -> None:
        config = self.config
        deadline = None if config.duration_s is None else time.monotonic() + config.duration_s
        self._last_stats = time.monotonic()
        while not self._stop_requested:
            self._wake.clear()
            self._poll()
            if all(s.finished for s in self.streams):
                log.info("every stream has ended or reached its frame limit")
                break
            if deadline is not None and time.monotonic() >= deadline:
                log.info("duration of %.1f s reached", config.duration_s)
                break
            self._maybe_stats()
            self._wake.wait(self.poll_s)

    def _head_alive(self, every_s: float = 1.0) -> bool:
        """Whether the head still answers (checked at most every ``every_s``); ClusterError once it has
        been silent for ``node_timeout_s``: without it nothing can be placed, and Ray would end this process
        after a minute with no word about the sinks."""
        now = time.monotonic()
        if self._owns_ray or self._gcs is None or now - self._head_checked < every_s:
            return self._head_silent_since is None
        self._head_checked = now
        host, _, port = self._gcs.rpartition(":")
        if _answers(host, int(port), timeout_s=1.0):
            self._head_silent_since = None
            return True
        if self._head_silent_since is None:
            self._head_silent_since = now
            log.warning("the Ray head at %s does not answer", self._gcs)
        if now - self._head_silent_since >= self.node_timeout_s:
            raise ClusterError(f"lost the Ray cluster: its head at {self._gcs} stopped answering")
        return False

    def _poll(self) -> None:
        import ray

        now = time.monotonic()
        if not self._head_alive():
            return  # nothing can be asked of the cluster now; the hosts keep their records meanwhile
        waiting = [s for s in self.streams if not s.finished and s.host is None]
        if waiting and now - self._placed_waiting >= RETRY_S:
            self._place_waiting(waiting)
        for host in list(self.hosts.values()):
            if host.pending is None:
                host.pending = host.actor.drain.remote()
                host.asked = now
        pending = [h.pending for h in self.hosts.values()]
        if not pending:
            return
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=self.poll_s)
        ready_set = set(ready)
        for host in list(self.hosts.values()):
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

    def _answer_limit(self, host: _Host) -> float:
        """A new host imports torch and loads the model before it answers, and a host that was just given streams
        exports and compiles their graphs (on a busy one-core node that can take seconds): give both longer."""
        if host.answered is None:
            return max(60.0, self.node_timeout_s)
        now = time.monotonic()
        opening = any(s.host is host and now - s.placed_at < OPENING_S for s in self.streams)
        return max(OPENING_S, self.node_timeout_s) if opening else self.node_timeout_s

    def _take(self, host: _Host, answer: dict) -> None:
        now = host.answered = time.monotonic()
        cpu = (answer["cpu_s"], answer["wall_s"])
        if host.cpu is None:
            host.cpu, host.sample_start = cpu, now
        elif cpu[1] - host.cpu[1] >= CPU_SAMPLE_S:
            host.cores = (cpu[0] - host.cpu[0]) / (cpu[1] - host.cpu[1])
            host.measured_since = host.sample_start
            host.cpu, host.sample_start = cpu, now
        by_name = {s.name: s for s in self.streams if s.host is host}
        for name, part in answer["streams"].items():
            stream = by_name.get(name)
            if stream is None:  # a stream this host ran before it was moved (a slow node that came back)
                continue
            for record in part["records"]:
                self._forward(stream, record)
            if part["done"]:
                self._ended(stream, part["error"])

    def _ended(self, stream: _ClusterStream, error: str | None) -> None:
        if error and not stream.ever_ran:
            raise ClusterError(f"{stream.name}: {error}")
        if error:
            self._write(self._event(stream, "stream_ended", f"on node {stream.host.node.label}: {error}"))
        stream.finished = True
        stream.host = None

    def _forward(self, stream: _ClusterStream, record: dict) -> None:
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
        self._write(record)

    def _host_lost(self, host: _Host, reason: str) -> None:
        """Every stream of ``host`` moves: stream_lost now, stream_restored at its first prediction elsewhere."""
        import ray

        node = host.node
        self.suspect[node.node_id] = time.monotonic()
        self.hosts.pop(node.node_id, None)
        try:
            ray.kill(host.actor, no_restart=True)
        except Exception:  # already dead
            log.debug("kill after loss", exc_info=True)
        moving = [s for s in self.streams if s.host is host]
        log.warning("node %s lost (%s): moving %d stream(s)", node.label, reason, len(moving))
        for stream in moving:
            detail = f"node {node.label} lost ({reason}); moving the stream, its state starts afresh"
            if stream.lost_at is None:  # one stream_lost per outage, however many moves it takes
                self._write(self._event(stream, "stream_lost", detail))
                stream.lost_at = time.monotonic()
                stream.moved_from = node
            stream.host = None
            stream.last_stats = {}
        self._flush()
        if self._head_alive(every_s=0.0):  # a node lost with the head: the next poll says so
            self._place_waiting(moving)

    def _place_waiting(self, streams: list[_ClusterStream]) -> None:
        """Place streams that have no node, with the cluster's nodes as they are now (one look for all)."""
        self._placed_waiting = now = time.monotonic()
        self._refresh_nodes()
        for stream in streams:
            if not self._place(stream) and now - stream.waiting_logged > WAIT_LOG_S:
                stream.waiting_logged = now
                log.warning("%s: no node to run on%s; waiting", stream.name, " (pinned)" if stream.pins else "")

    def _restored(self, stream: _ClusterStream) -> None:
        source = stream.moved_from.label if stream.moved_from else "?"
        after = time.monotonic() - stream.lost_at
        detail = f"moved from node {source} to node {stream.host.node.label} after {after:.1f} s; state reset"
        log.info("%s: %s", stream.name, detail)
        record = self._event(stream, "stream_restored", detail)
        record["moved_from"] = source
        record["after_s"] = round(after, 3)
        self._write(record)
        stream.lost_at = None
        stream.moved_from = None

    def _event(self, stream: _ClusterStream, event: str, detail: str) -> dict:
        record = event_record(StreamEvent(event, stream.name, 0, 0.0, detail=detail))
        return record | {"node": stream.host.node.label if stream.host else None}

    # -- output ----------------------------------------------------------------------------------------

    def _write(self, record: dict) -> None:
        for sink in self.sinks:
            sink.write(record)

    def _flush(self) -> None:
        for sink in self.sinks:
            sink.flush()

    def _maybe_stats(self, force: bool = False) -> None:
        interval = self.config.stats_interval_s
        now = time.monotonic()
        if not force and (interval <= 0 or now - self._last_stats < interval):
            return
        self._last_stats = now
        for record in self.node_stats():
            self._write(record)
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
        self._flush()

    def node_stats(self) -> list[dict]:
        """One ``node_stats`` record per node that runs streams, from its streams' last stats records."""
        records = []
        for host in sorted(self.hosts.values(), key=lambda h: h.node.label):
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

    def _shutdown(self, raising: bool) -> None:
        """Stop every stream and write what it still had, final node stats, close the sinks, leave."""
        errors: list[BaseException] = []
        quiet = logging.DEBUG if raising else logging.ERROR
        try:
            if self._connected and self._head_silent_since is None:  # with the head gone, so is every host
                self._stop_hosts()
        except BaseException as exc:
            errors.append(exc)
            log.log(quiet, "error while stopping the cluster run: %s", exc)
        finally:
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception as exc:
                    errors.append(exc)
                    log.log(quiet, "closing %r failed: %s", sink, exc)
            self.close()
        if errors and not raising:
            raise errors[0]

    def _stop_hosts(self) -> None:
        import ray

        hosts = list(self.hosts.values())
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
        self._maybe_stats(force=True)
        for host in hosts:
            ray.kill(host.actor, no_restart=True)
        for stream in self.streams:
            stream.finished = True
            stream.host = None
        self.hosts.clear()


def _check_reachable(address: str) -> None:
    """Fail in a second, with one line, when nothing listens at ``address`` (Ray would retry for minutes).

    Ray reads a loopback address as "this machine's network address". A head bound to the loopback
    interface only (``ray start --head --node-ip-address 127.0.0.1``, as the tests run it) is then out of
    reach; in that case this machine is told to be 127.0.0.1 for Ray (``LOOPBACK_ONLY``), before Ray is
    imported.
    """
    host, _, port_text = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not host or not port_text.isdigit():
        raise ClusterError(f"--cluster wants HOST:PORT of a Ray head or 'auto', got {redact(address)!r}")
    port = int(port_text)
    if not _answers(host, port):
        raise ClusterError(f"nothing answers at {redact(address)}: no Ray head there (ray start --head)")
    if host in ("localhost", "::1") or host.startswith("127."):
        outward = _outward_address()
        if outward is None or not _answers(outward, port):
            os.environ.setdefault(LOOPBACK_ONLY, "0")


def _answers(host: str, port: int, timeout_s: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _outward_address() -> str | None:
    """The address this machine uses towards other machines (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))
            return probe.getsockname()[0]
    except OSError:
        return None


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


__all__ = ["ClusterError", "ClusterRun", "Pin", "SecretURI"]
