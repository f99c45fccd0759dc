"""``dcrn run``: recognise actions on cameras, RTSP streams, files or the synthetic stream, headless.

Records go to every ``--sink`` (default: JSON lines on stdout); stats and progress are logged on stderr.
SIGINT / SIGTERM stop cleanly: capture stops, queued frames are finished, every sink is flushed and
closed, and the exit code is 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import TYPE_CHECKING

from dcrn.app.argtypes import (
    bounded,
    fraction,
    host_port,
    non_negative_seconds,
    positive_int,
    probability,
    seconds,
    thread_count,
    writable_folder,
)

if TYPE_CHECKING:
    from dcrn.app.site_run import PipelineGroup
    from dcrn.engine.cluster.driver import ClusterRun
    from dcrn.engine.pipeline import Pipeline

log = logging.getLogger(__name__)

roll_seconds = bounded(float, 0.0, 600.0, name="roll_seconds", expected="seconds from 0 to 600")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        metavar="URI",
        action="append",
        help="camera index, rtsp:// / http(s):// URL, video file or 'synthetic:'; repeat for several streams "
        "(needed unless --config names cameras; given with --config, it replaces the file's cameras)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="a site config (YAML: cameras, sinks, evidence, backend; docs/DEPLOY.md); flags given here win",
    )
    add_credentials_argument(parser)
    add_engine_arguments(parser)
    # None: from --config, else the default
    parser.set_defaults(model=None, backend=None, device=None, threads=None, people=None)
    alerts = parser.add_argument_group("evidence and metrics (docs/DEPLOY.md)")
    alerts.add_argument(
        "--evidence",
        type=writable_folder,
        metavar="DIR",
        help="write a clip (mp4, with pre- and post-roll) and a snapshot (JPEG) of every action into DIR",
    )
    alerts.add_argument(
        "--evidence-pre", type=roll_seconds, metavar="S", help="--evidence: seconds kept before an action (default 3)"
    )
    alerts.add_argument(
        "--evidence-post", type=roll_seconds, metavar="S", help="--evidence: seconds kept after an action (default 2)"
    )
    alerts.add_argument(
        "--metrics",
        type=host_port,
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (HOST default 127.0.0.1)",
    )
    parser.add_argument(
        "--sink",
        metavar="SPEC",
        action="append",
        help="where records go, repeatable: stdout (default), stdout?format=text, "
        "jsonl:PATH[?max_mb=100&keep=5&logits=1], csv:PATH",
    )
    parser.add_argument("--no-pace", action="store_true", help="read files as fast as possible, not at their fps")
    parser.add_argument("--loop", action="store_true", help="play files again from the start when they end")
    parser.add_argument(
        "--timeout", type=seconds, default=10.0, metavar="S", help="open timeout of network streams (default 10)"
    )
    parser.add_argument(
        "--stall-timeout",
        type=seconds,
        default=3.0,
        metavar="S",
        help="a network stream that sends no frame for S seconds is lost and reopened (default 3)",
    )
    cluster = parser.add_argument_group("cluster (docs/SCALING.md)")
    cluster.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="spread the streams over a Ray cluster: HOST:PORT of its head, or 'auto' ($RAY_ADDRESS, else an "
        "embedded Ray on this machine); records still go to the sinks named here",
    )
    cluster.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="STREAM=SELECTOR",
        help="--cluster: run streams matching STREAM (a glob) only on nodes with resource:NAME, in ip:CIDR "
        "or with node:ID; repeatable",
    )
    cluster.add_argument(
        "--node-timeout",
        type=seconds,
        default=3.0,
        metavar="S",
        help="--cluster: a stream whose node has not answered for S seconds moves to another node (default 3)",
    )


def add_credentials_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--credentials",
        metavar="FILE",
        help="passwords of network sources, kept off the command line: one 'HOST USER:PASSWORD' line per "
        "camera, readable by you alone (chmod 600); default $DCRN_CREDENTIALS (docs/SECURITY.md)",
    )


def add_engine_arguments(parser: argparse.ArgumentParser, *, model_help: str = "") -> None:
    """Options shared by ``dcrn run`` and ``dcrn demo``."""
    parser.add_argument(
        "--model", default="default", metavar="CKPT", help=model_help or "checkpoint path or shipped model name"
    )
    parser.add_argument(
        "--backend",
        default="auto",
        help="auto (default: TensorRT or torch CUDA graphs on a GPU; on the CPU OpenVINO bf16 where the CPU has "
        "native bf16, else ONNX Runtime, else torch; the first log line says which and why), torch, onnxruntime, "
        "openvino or tensorrt",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (default: a CUDA GPU when there is one and the backend runs there), cpu or cuda[:N]",
    )
    parser.add_argument("--fp16", action="store_true", help="half precision on GPU backends")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="run the encoder in INT8 on the CPU (onnxruntime), statically calibrated on training clips; "
        "made once per model and cached",
    )
    parser.add_argument(
        "--calibration",
        metavar="DIR",
        help="--int8: data folder of clips to calibrate on (default: the folder the model was trained on)",
    )
    parser.add_argument("--max-frames", type=positive_int, metavar="N", help="stop each stream after N frames")
    parser.add_argument(
        "--people",
        type=bounded(int, 1, 16, name="people"),
        metavar="N",
        help="models taught on the body: follow up to N people per stream, each with own predictions and events "
        "(records carry a `person` id; default: the site config's, else 1: the largest person)",
    )
    parser.add_argument("--duration", type=seconds, metavar="S", help="stop after S seconds")
    parser.add_argument(
        "--stats-interval",
        type=non_negative_seconds,
        default=5.0,
        metavar="S",
        help="stats records every S seconds (default 5)",
    )
    parser.add_argument(
        "--smoothing", default="ema", choices=["ema", "window", "none"], help="probability smoothing (default ema)"
    )
    parser.add_argument(
        "--alpha", type=fraction(low_open=True), default=0.3, help="EMA weight of the newest frame (default 0.3)"
    )
    parser.add_argument(
        "--window", type=positive_int, default=8, help="frames averaged by --smoothing window (default 8)"
    )
    parser.add_argument(
        "--threshold",
        type=probability,
        default=0.6,
        metavar="P",
        help="an action starts at this probability (default 0.6)",
    )
    parser.add_argument(
        "--threshold-off", type=probability, default=0.4, metavar="P", help="... and ends below this one (default 0.4)"
    )
    parser.add_argument(
        "--class-threshold",
        action="append",
        default=[],
        metavar="LABEL=P",
        help="start threshold of one class, repeatable (e.g. --class-threshold fight=0.8)",
    )
    parser.add_argument(
        "--min-frames", type=positive_int, default=3, metavar="N", help="frames above/below a threshold before an event"
    )
    parser.add_argument(
        "--background",
        action="append",
        metavar="LABEL",
        help="a label that means 'no action' and never starts an event, repeatable "
        "(default: still, none, background, idle, no_fight, normal, ...)",
    )
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=1,
        metavar="N",
        help="CPU threads for the model (default 1; 0 = all cores)",
    )
    parser.add_argument("--cache-dir", metavar="DIR", help="exported graphs cache (default ~/.cache/dcrn)")


def class_thresholds(items: list[str]) -> dict[str, float]:
    """``--class-threshold`` items (``LABEL=P``) -> {label: P}; a malformed item is a ConfigError."""
    from dcrn.models.errors import ConfigError

    thresholds = {}
    for item in items:
        label, sep, value = item.rpartition("=")
        try:
            thresholds[label] = float(value)
        except ValueError:
            label = ""
        if not sep or not label:
            raise ConfigError(f"--class-threshold wants LABEL=PROBABILITY, got {item!r}")
    return thresholds


def postprocess_config(args: argparse.Namespace):
    from dcrn.engine.postprocess import DEFAULT_BACKGROUND, PostprocessConfig

    thresholds = class_thresholds(args.class_threshold)
    return PostprocessConfig(
        smoothing=args.smoothing,
        alpha=args.alpha,
        window=args.window,
        threshold_on=args.threshold,
        threshold_off=min(args.threshold_off, args.threshold),
        class_thresholds=thresholds,
        min_frames_on=args.min_frames,
        min_frames_off=args.min_frames,
        background=tuple(args.background) if args.background else DEFAULT_BACKGROUND,
    )


def pipeline_config(args: argparse.Namespace, sources: list[str], *, pace: bool, loop: bool, timeout_s: float):
    from dcrn.engine.pipeline import PipelineConfig

    return PipelineConfig(
        sources=sources,
        model=args.model,
        backend=args.backend,
        device=args.device,
        dtype="float16" if args.fp16 else "float32",
        int8=args.int8,
        calibration=args.calibration,
        max_frames=args.max_frames,
        duration_s=args.duration,
        pace=pace,
        loop=loop,
        timeout_s=timeout_s,
        stats_interval_s=args.stats_interval,
        postprocess=postprocess_config(args),
        cache_dir=args.cache_dir,
        threads=args.threads,
        people=getattr(args, "people", None) or 1,  # None: neither the flag nor a site config gave it
    )


def quiet_native_logs(args: argparse.Namespace) -> None:
    """OpenCV and FFmpeg print warnings straight to stderr; errors reach the user as one line anyway."""
    if getattr(args, "log_level", "INFO") != "DEBUG":
        from dcrn.engine.sources.factory import quiet_native_logs as quiet

        quiet()


def main(args: argparse.Namespace) -> int:
    from dcrn.app.site_config import load_site_config
    from dcrn.app.site_run import apply_site_defaults
    from dcrn.models.errors import ConfigError

    site = load_site_config(args.config) if args.config else None  # checked whole, before anything starts
    args.source_given = bool(args.source)
    apply_site_defaults(args, site)
    if not args.source:
        raise ConfigError("no stream to run: give --source URI (repeatable) or --config FILE")
    if args.cluster is not None and args.evidence is not None:
        raise ConfigError("--evidence does not run with --cluster yet: run evidence on a single box")
    quiet_native_logs(args)
    from dataclasses import replace

    from dcrn.app.site_run import PipelineGroup, SharedSink, evidence_config, site_groups
    from dcrn.engine.pipeline import Pipeline
    from dcrn.engine.sinks.factory import parse_sink
    from dcrn.engine.sources.credentials import apply_credentials

    sinks = [parse_sink(spec) for spec in args.sink or ["stdout"]]
    if args.metrics is not None:
        sinks.append(metrics_sink(*args.metrics))
    sources = apply_credentials(args.source, args.credentials)  # in memory only: never in argv or a message
    config = pipeline_config(args, sources, pace=not args.no_pace, loop=args.loop, timeout_s=args.timeout)
    config = replace(  # replace() validates it like every other field
        config,
        stall_s=args.stall_timeout,
        evidence_dir=None if args.evidence is None else str(args.evidence),
        evidence=evidence_config(args, site),
    )
    configs = site_groups(config, site, args, class_thresholds(args.class_threshold))
    if args.cluster is None:
        if args.pin:
            raise ConfigError("--pin needs --cluster")
        if len(configs) == 1:
            return run_pipeline(Pipeline(configs[0], sinks))
        log.info("%d pipelines (cameras differ in model, thresholds or evidence)", len(configs))
        shared = [SharedSink(sink, len(configs)) for sink in sinks]
        return run_pipeline(PipelineGroup([Pipeline(c, shared) for c in configs]))
    if len(configs) > 1:
        raise ConfigError("--cluster runs one model and one set of thresholds: give the cameras the same ones")
    from dcrn.engine.cluster.driver import ClusterRun, Pin

    run = ClusterRun(
        configs[0],
        sinks,
        address=args.cluster,
        pins=[Pin.parse(p) for p in args.pin],
        node_timeout_s=args.node_timeout,
    )
    run.connect()  # on the main thread: Ray starts or joins here
    return run_pipeline(run)


def metrics_sink(host: str, port: int):
    """The ``--metrics`` sink (prometheus_client comes with the ``alerts`` extra)."""
    from dcrn.models.errors import ConfigError

    try:
        from dcrn.engine.sinks.metrics import MetricsSink

        return MetricsSink(host, port)
    except ImportError:
        raise ConfigError("--metrics needs prometheus_client: pip install 'dcrn-live[alerts]'") from None


def run_pipeline(pipeline: Pipeline | ClusterRun | PipelineGroup) -> int:
    """Run on a worker thread; SIGINT / SIGTERM ask it to stop. Errors from the run are raised here.

    The main thread only waits, so signal handlers never interrupt the pipeline inside a lock. A second
    signal while stopping raises KeyboardInterrupt (the command line exits with 130).
    """
    failure: list[BaseException] = []

    def target() -> None:
        try:
            pipeline.run()
        except BaseException as exc:
            failure.append(exc)

    signals = 0

    def on_signal(signum: int, frame: object) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            raise KeyboardInterrupt
        log.info("%s: stopping (finishing queued frames, closing sinks)", signal.Signals(signum).name)
        pipeline.stop()

    handled = [signal.SIGINT, signal.SIGTERM]
    previous = {sig: signal.signal(sig, on_signal) for sig in handled}
    worker = threading.Thread(target=target, name="dcrn-pipeline")
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        pipeline.stop()
        worker.join(5.0)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure:
        raise failure[0]
    return 0
