"""The node side of ``dcrn run --cluster``: one :class:`StreamHost` actor per node runs its streams.

A host is a long-lived process on its node that runs the ordinary single-box :class:`Pipeline` once per
stream placed there: the stream's capture, ring, recurrent state and postprocessing stay next to its
frames, and only records travel back, through a :class:`BufferSink` the driver drains. The process, its
imports and the model file are shared by the node's streams, so a stream that moves here starts in
about the time its camera takes to open.

A checkpoint given as a file path travels once through Ray's object store (:func:`checkpoint_blob`, with
the file's permission bits) and each node keeps it in its cache by content (:func:`materialise`), with
the mode the original had: the worker machines need no shared disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

from dcrn.engine.redact import redact
from dcrn.engine.sinks.base import Sink
from dcrn.engine.sources.factory import quiet_native_logs
from dcrn.models.files import atomic_write, cache_root

log = logging.getLogger(__name__)

DRAIN_MAX = 5000  # records per pull, at most
BUFFER_MAX = 100_000  # records a host keeps for the driver before it drops the oldest
MODELS_FOLDER = "cluster-models"  # under the cache root: the checkpoints nodes were sent, by content

# (file name, content digest, content, permission bits): a checkpoint file on its way to the nodes
CheckpointBlob = tuple[str, str, bytes, int]


class SecretURI(str):
    """A source URI that shows itself redacted (``repr``, ``str()`` stays the real one for the source)."""

    def __repr__(self) -> str:
        return repr(redact(str(self)))


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
    state and postprocessing, exactly as on one box. ``drain()`` answers at once; ``stop(name)`` ends a
    pipeline the way SIGTERM ends ``dcrn run`` (queued frames finished, running action ended, final stats).
    """

    def __init__(self, model: str, checkpoint: CheckpointBlob | None = None) -> None:
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
        self.model = materialise(checkpoint) if checkpoint is not None else model
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


def checkpoint_blob(model: str) -> CheckpointBlob | None:
    """A checkpoint file given by path travels with the hosts (other machines do not have it), with its
    permission bits; a shipped model name does not need to (None)."""
    path = Path(model)
    if not path.is_file():
        return None
    data = path.read_bytes()
    mode = stat.S_IMODE(path.stat().st_mode)
    return path.name, hashlib.sha256(data).hexdigest()[:16], data, mode


def materialise(checkpoint: CheckpointBlob) -> str:
    """The driver's checkpoint file as a file on this node (cached by content under :func:`cache_root`,
    with the original's mode), its path. Whole or not at all, also with two hosts on one machine; a copy
    cached earlier loses what access the original does not give."""
    name, digest, data, mode = checkpoint
    path = cache_root() / MODELS_FOLDER / f"{digest}-{name}"
    if not path.exists():
        atomic_write(path, data, mode=mode)
    elif (cached := stat.S_IMODE(path.stat().st_mode)) & ~mode:  # a copy cached with more access than this one
        os.chmod(path, cached & mode)
    return str(path)


def _quiet_logs() -> None:
    quiet_native_logs()  # a host's environment is its node's, not the driver's
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def host_class():
    """:class:`StreamHost` as a Ray actor class (imports Ray)."""
    import ray

    return ray.remote(max_concurrency=4)(StreamHost)
