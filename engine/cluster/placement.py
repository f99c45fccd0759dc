"""Where a stream runs: pins, the nodes the driver knows, and the least-loaded node a stream may use.

A node's load is the CPU its :class:`~dcrn.engine.cluster.host.StreamHost` process measurably uses, per
CPU of the node. Streams placed since that measurement began (just started, or moved there after a
loss) count at the typical cost of a stream: the median, over hosts, of measured cores per measured
stream (``COST_UNKNOWN`` before anything is measured). Ray's own CPU accounting is not used: it counts
reservations, not use. Plain arithmetic on what the hosts reported; nothing here talks to Ray.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import statistics
import time
from dataclasses import dataclass, field

from dcrn.engine.cluster.host import SecretURI
from dcrn.models.errors import ConfigError

SUSPECT_S = 30.0  # a node where a stream was lost gets no new stream for this long (unless it is the only one)
COST_UNKNOWN = 0.1  # CPU (cores) assumed for a stream before any stream was measured
CPU_SAMPLE_S = 2.0  # a host's CPU use is measured over this long


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


@dataclass(eq=False)
class NodeHost:
    """The driver's handle on one node's :class:`~dcrn.engine.cluster.host.StreamHost`."""

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

    def sample_cpu(self, cpu_s: float, wall_s: float, now: float) -> None:
        """The host's process CPU time and its age, as its answer reported them at ``now``."""
        if self.cpu is None:
            self.cpu, self.sample_start = (cpu_s, wall_s), now
        elif wall_s - self.cpu[1] >= CPU_SAMPLE_S:
            self.cores = (cpu_s - self.cpu[0]) / (wall_s - self.cpu[1])
            self.measured_since = self.sample_start
            self.cpu, self.sample_start = (cpu_s, wall_s), now


@dataclass(eq=False)
class ClusterStream:
    """The driver's record of one stream: where it runs and what was said about it."""

    name: str
    uri: SecretURI
    pins: list[Pin]
    host: NodeHost | None = None
    placed_at: float = 0.0  # monotonic time of the current placement
    frames: int = 0  # predictions seen on this placement
    ever_ran: bool = False  # a prediction arrived on some placement
    lost_at: float | None = None  # monotonic time of a stream_lost not yet followed by stream_restored
    moved_from: NodeInfo | None = None
    waiting_logged: float = 0.0
    finished: bool = False
    last_stats: dict = field(default_factory=dict)


class Placement:
    """The nodes the driver knows, its host on each, and which node a stream goes to."""

    def __init__(self, streams: list[ClusterStream]) -> None:
        self.streams = streams
        self.nodes: dict[str, NodeInfo] = {}  # node id -> alive node, as Ray last listed them
        self.hosts: dict[str, NodeHost] = {}  # node id -> its StreamHost
        self.suspect: dict[str, float] = {}  # node id -> monotonic time streams were lost there

    def usable(self) -> list[NodeInfo]:
        """Alive nodes with a CPU to run streams on (a head started with ``--num-cpus 0`` takes none)."""
        return [n for n in self.nodes.values() if n.cpus > 0]

    def candidates(self, stream: ClusterStream) -> list[NodeInfo]:
        """The nodes ``stream``'s pins allow; those that did not just lose streams, unless no other is left."""
        nodes = [n for n in self.usable() if all(p.allows(n) for p in stream.pins)]
        now = time.monotonic()
        trusted = [n for n in nodes if now - self.suspect.get(n.node_id, -1e9) > SUSPECT_S]
        return trusted or nodes

    def measured(self, host: NodeHost) -> list[ClusterStream]:
        """The streams of ``host`` that ran through its last CPU sample."""
        if host.cores is None:
            return []
        return [s for s in self.streams if s.host is host and s.placed_at <= host.measured_since]

    def stream_cost(self) -> float:
        """CPU cores one stream takes: the median over hosts of measured cores per measured stream."""
        samples = [h.cores / len(m) for h in self.hosts.values() if (m := self.measured(h))]
        return statistics.median(samples) if samples else COST_UNKNOWN

    def load(self, node: NodeInfo) -> float:
        """CPU cores in use on ``node`` per CPU: the host's measured use, plus the typical cost of each stream
        placed there since that measurement began (just started, or moved there after a loss)."""
        host = self.hosts.get(node.node_id)
        on_node = [s for s in self.streams if s.host is not None and s.host.node.node_id == node.node_id]
        measured = self.measured(host) if host is not None else []
        used = (host.cores if measured else 0.0) + (len(on_node) - len(measured)) * self.stream_cost()
        return used / max(node.cpus, 1e-9)

    def choose(self, stream: ClusterStream) -> NodeInfo | None:
        """The node ``stream`` goes to: the least loaded per CPU among those it may use, the larger one on a
        tie (None: no node it may use now)."""
        candidates = self.candidates(stream)
        if not candidates:
            return None
        return min(candidates, key=lambda n: (round(self.load(n), 3), -n.cpus, n.node_id))  # ties: more room
