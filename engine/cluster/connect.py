"""Joining or starting Ray for ``dcrn run --cluster``, and watching that the cluster's head still answers.

``auto`` joins the cluster in ``$RAY_ADDRESS`` when it is set, else starts an embedded Ray on this
machine for the run, listening on the loopback interface only. ``HOST:PORT`` (or ``ray://HOST:PORT``)
joins a running cluster. Before Ray is asked, the address must answer and greet like a Ray head (HTTP/2,
as gRPC does), and Ray gets ``JOIN_TIMEOUT_S`` to join: a wrong address ends the run in seconds with
one line, where Ray alone retries for minutes. An address is only ever shown masked: Ray takes no user
or password in it (it authenticates with ``RAY_AUTH_TOKEN``), and one typed there is never printed back.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass

from dcrn.engine.cluster.placement import NodeInfo
from dcrn.engine.errors import ClusterError
from dcrn.engine.redact import MASK, redact
from dcrn.models.errors import ConfigError

log = logging.getLogger(__name__)

NODES_TIMEOUT_S = 5.0  # the head lists its nodes within this time, or is taken to be gone
JOIN_TIMEOUT_S = 20.0  # Ray joins a cluster that greeted like a Ray head within this time, or the run ends
GREETING_S = 3.0  # a Ray head answers the HTTP/2 greeting within this time
EMBEDDED_STORE_BYTES = 256 * 1024 * 1024  # only records and one checkpoint pass through Ray's object store
# Set to "0" before Ray is imported, Ray takes this machine's address to be 127.0.0.1 (its only effect).
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")
# What an HTTP/2 client sends first: the preface and an empty SETTINGS frame (RFC 9113, 3.4).
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS = 4  # frame type of the server's first frame


def shown_address(text: str) -> str:
    """``text`` as messages may show it: anything before the last ``@`` of the address masked."""
    scheme = match[0] if (match := _SCHEME.match(text)) else ""
    rest = text[len(scheme) :]
    if "@" in rest:
        rest = f"{MASK}@{rest.rpartition('@')[2]}"
    return redact(scheme + rest)


@dataclass(frozen=True)
class ClusterAddress:
    """``HOST:PORT`` or ``ray://HOST:PORT`` of a Ray head, as ``--cluster`` or ``$RAY_ADDRESS`` gave it."""

    text: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ClusterAddress:
        shown = shown_address(text)
        if "@" in text:
            raise ConfigError(
                f"--cluster {shown}: a Ray address takes no user or password "
                "(a cluster with token authentication wants RAY_AUTH_TOKEN: docs/SCALING.md)"
            )
        host, _, port_text = text.removeprefix("ray://").rpartition(":")
        host = host.strip("[]")
        if not host or not port_text.isdigit():
            raise ClusterError(f"--cluster wants HOST:PORT of a Ray head or 'auto', got {shown!r}")
        return cls(text, host, int(port_text))

    @property
    def shown(self) -> str:
        return shown_address(self.text)


class RayConnection:
    """This process's link to Ray: :meth:`open` joins or starts it, :meth:`close` leaves (an embedded Ray
    stops), :meth:`head_alive` watches the head, :meth:`nodes` lists the alive nodes."""

    def __init__(self, address: str = "auto", *, node_timeout_s: float = 3.0) -> None:
        self.address = address  # "auto" or HOST:PORT
        self.node_timeout_s = node_timeout_s  # a head silent this long ends the run
        self.connected = False
        self.owns_ray = False  # an embedded Ray, started for this run
        self.gcs: str | None = None  # HOST:PORT of the head's control service
        self.head_silent_since: float | None = None  # monotonic time the head stopped answering
        self._head_checked = 0.0  # monotonic time of the last check that the head answers

    @property
    def shown(self) -> str:
        return shown_address(self.address)

    def describe(self) -> str:
        return "an embedded Ray on this machine" if self.owns_ray else f"the Ray cluster at {self.shown}"

    def open(self) -> None:
        """Join the cluster at the address, or start an embedded Ray; ClusterError, one line, when it fails."""
        joining = self.address != "auto" or bool(os.environ.get("RAY_ADDRESS"))
        if joining:
            _check_reachable(
                ClusterAddress.parse(self.address if self.address != "auto" else os.environ["RAY_ADDRESS"])
            )
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
            if not joining:
                self.owns_ray = True
                address = "local"  # a new embedded instance for this run, whatever else runs here
            elif address == "auto":
                address = os.environ["RAY_ADDRESS"]
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the site
            logging.getLogger("ray").setLevel(logging.ERROR)  # its start-up notes are not the user's business
            embedded = {"object_store_memory": EMBEDDED_STORE_BYTES} if self.owns_ray else {}
            options = dict(
                address=address,
                **embedded,
                include_dashboard=False if self.owns_ray else None,
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
            try:
                if self.owns_ray:
                    ray.init(**options)
                else:
                    _init_within(JOIN_TIMEOUT_S, options)
            except Exception as exc:  # ConnectionError, RuntimeError, ValueError: all mean "no cluster there"
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ClusterError(f"cannot join the Ray cluster at {self.shown}: {redact(first)}") from None
        self.connected = True
        self.gcs = ray.get_runtime_context().gcs_address  # the head, watched by head_alive()

    def close(self) -> None:
        if self.connected:
            import ray

            ray.shutdown()  # an embedded instance stops; a joined cluster stays up
            self.connected = False

    def head_alive(self, every_s: float = 1.0) -> bool:
        """Whether the head still answers (checked at most every ``every_s``); ClusterError once it has
        been silent for ``node_timeout_s``: without it nothing can be placed, and Ray would end this process
        after a minute with no word about the sinks."""
        now = time.monotonic()
        if self.owns_ray or self.gcs is None or now - self._head_checked < every_s:
            return self.head_silent_since is None
        self._head_checked = now
        host, _, port = self.gcs.rpartition(":")
        if _answers(host, int(port), timeout_s=1.0):
            self.head_silent_since = None
            return True
        if self.head_silent_since is None:
            self.head_silent_since = now
            log.warning("the Ray head at %s does not answer", self.gcs)
        if now - self.head_silent_since >= self.node_timeout_s:
            raise ClusterError(f"lost the Ray cluster: its head at {self.gcs} stopped answering")
        return False

    def nodes(self) -> dict[str, NodeInfo] | None:
        """The alive nodes by id, or None when the head did not list them within ``NODES_TIMEOUT_S`` (Ray
        waits a minute for a head that is gone). A head whose port no longer takes connections is not asked:
        Ray's client can end this process when the head goes away in the middle of a node listing."""
        import ray

        if not self.head_alive(every_s=0.0):
            return None
        answer: list = []
        asking = threading.Thread(target=lambda: answer.append(ray.nodes()), name="dcrn-nodes", daemon=True)
        asking.start()
        asking.join(NODES_TIMEOUT_S)
        if not answer:
            return None
        nodes = {}
        for entry in answer[0]:
            if entry.get("Alive"):
                info = NodeInfo(entry["NodeID"], entry.get("NodeManagerAddress", "?"), dict(entry.get("Resources", {})))
                nodes[info.node_id] = info
        return nodes


def _init_within(timeout_s: float, options: dict) -> None:
    """``ray.init(**options)`` on a helper thread, given ``timeout_s``: Ray retries an address that accepts
    connections but does not answer as it expects for minutes. The thread is left behind on a timeout (the
    process ends with the run); TimeoutError then."""
    import ray

    outcome: list[BaseException | None] = []

    def join() -> None:
        try:
            ray.init(**options)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=join, name="dcrn-ray-join", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise TimeoutError(f"no answer from Ray within {timeout_s:g} s")
    if outcome[0] is not None:
        raise outcome[0]


def _check_reachable(address: ClusterAddress) -> None:
    """Fail in seconds, with one line, when nothing listens at ``address`` or what listens is not a Ray head
    (Ray would retry for minutes).

    Ray reads a loopback address as "this machine's network address". A head bound to the loopback
    interface only (``ray start --head --node-ip-address 127.0.0.1``, as the tests run it) is then out of
    reach; in that case this machine is told to be 127.0.0.1 for Ray (``LOOPBACK_ONLY``), before Ray is
    imported.
    """
    host, port = address.host, address.port
    if not _answers(host, port):
        raise ClusterError(f"nothing answers at {address.shown}: no Ray head there (ray start --head)")
    if not _greets_like_grpc(host, port):
        raise ClusterError(
            f"something answers at {address.shown}, but not a Ray head: no gRPC greeting within {GREETING_S:g} s "
            "(a head listens on 6379 unless started with --port)"
        )
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


def _greets_like_grpc(host: str, port: int, timeout_s: float = GREETING_S) -> bool:
    """Whether ``host:port`` answers an HTTP/2 greeting with its SETTINGS frame, as every gRPC server (a
    Ray head's control service, a Ray Client server) does at once. Not checked under ``RAY_USE_TLS``:
    the greeting would have to go through TLS."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return True
    deadline = time.monotonic() + timeout_s
    head = b""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            conn.sendall(_HTTP2_PREFACE)
            while len(head) < 9:  # a frame header: length (3), type (1), flags (1), stream id (4)
                conn.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = conn.recv(9 - len(head))
                if not chunk:
                    return False
                head += chunk
    except OSError:  # refused, reset, or silent until the deadline
        return False
    return head[3] == _SETTINGS and head[5:9] == bytes(4)


def _outward_address() -> str | None:
    """The address this machine uses towards other machines (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))
            return probe.getsockname()[0]
    except OSError:
        return None
