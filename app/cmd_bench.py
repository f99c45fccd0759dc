"""``dcrn bench``: step latency, throughput, the sliding-window baseline, constant latency, end to end.

Runs every backend this machine has (``torch``, ``onnxruntime``, ``openvino``, ``tensorrt``) on one model,
side by side, prints a table and, with ``--json PATH``, writes the machine-readable document (one object
per backend under ``"backends"``, each with the precision it ran in, and under ``"default_backend"`` the
one ``--backend auto`` -- the default of ``dcrn run`` -- picks here, and why). ``--backend auto`` measures
that one alone. ``--int8`` adds ``onnxruntime-int8``: the onnxruntime backend with its encoder in INT8
(engine.quantize), measured in the same run, so the speed-up is a ratio on the same load. ``--quick`` is
the two-minute version (a 10,000-frame stream instead of 100,000).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dcrn.app.argtypes import bounded, positive_int, seconds, thread_count, writable_file
from dcrn.engine.backends.names import AUTO, BACKENDS

log = logging.getLogger(__name__)

INT8 = "onnxruntime-int8"  # the onnxruntime backend with its encoder in INT8
INIT_MODEL = "init"  # --model init: a freshly initialised seed CNN + GRU (no checkpoint needed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="default",
        help=f"checkpoint path or shipped model name (default: default); '{INIT_MODEL}' for a freshly "
        "initialised seed CNN + GRU at --input-size",
    )
    parser.add_argument(
        "--input-size",
        type=bounded(int, 16, 1024, name="input_size"),
        default=112,
        help=f"frame size of --model {INIT_MODEL}",
    )
    parser.add_argument(
        "--backend",
        action="append",
        choices=(AUTO, *BACKENDS, INT8),
        help="backend to measure (repeatable; default: all, unavailable ones are reported as such; "
        "auto: the one dcrn run picks by default here)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (a CUDA GPU if there is one), cpu, cuda or cuda:N (default: auto)"
    )
    parser.add_argument("--fp16", action="store_true", help="run GPU backends in float16")
    parser.add_argument(
        "--int8", action="store_true", help=f"also measure {INT8}: onnxruntime with the encoder in INT8 (CPU)"
    )
    parser.add_argument(
        "--calibration",
        metavar="DIR",
        help="--int8: clips to calibrate on (default: the folder the model was trained on)",
    )
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=1,
        help="CPU threads of the step, throughput, window and drift runs (default: 1)",
    )
    parser.add_argument(
        "--e2e-threads", default="1,2", help="CPU thread counts of the end-to-end runs, comma-separated (default: 1,2)"
    )
    parser.add_argument("--e2e-seconds", type=seconds, help="length of each end-to-end run (default: 20, quick: 6)")
    parser.add_argument(
        "--stream-frames", type=positive_int, help="length of the constant-latency stream (default: 100,000)"
    )
    parser.add_argument("--batches", default="1,4,16,64", help="throughput batch sizes (default: 1,4,16,64)")
    parser.add_argument("--quick", action="store_true", help="the short run: a 10,000-frame stream, about 2 minutes")
    parser.add_argument("--json", type=writable_file, metavar="PATH", help="also write the results as JSON to PATH")


@dataclass
class _Plan:
    """What one ``dcrn bench`` run measures, and on what."""

    model: Any  # the DCRN, in eval mode
    checkpoint: str  # the same model as a checkpoint path or shipped name (the pipeline loads its own)
    settings: Any  # dcrn.engine.bench.step.BenchSettings
    device: Any  # torch.device of GPU-capable backends
    dtype: Any  # torch.dtype
    threads: int  # CPU threads of the micro-benchmarks
    e2e_threads: list[int]  # CPU threads of each end-to-end run
    e2e_seconds: float
    int8: Any = None  # engine.quantize.Calibration of the INT8 column, or the reason it cannot run (str)


def main(args: argparse.Namespace) -> int:
    import os
    import tempfile
    from dataclasses import asdict

    from dcrn.engine.backends.choice import choose_backend
    from dcrn.engine.bench.report import check_targets, describe_machine, format_table, now_utc

    created, load_start = now_utc(), [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="dcrn-bench-") as folder:
        plan, model_info = _plan(args, Path(folder))
        default = choose_backend(AUTO, AUTO if args.device == AUTO else plan.device, dtype=plan.dtype)
        log.info("the default backend here: %s", default.describe())
        names = [default.name if name == AUTO else name for name in args.backend or BACKENDS]
        names += [INT8] if args.int8 else []
        reports = [_bench_one(name, plan) for name in dict.fromkeys(names)]
    settings = asdict(plan.settings) | {
        "threads": plan.threads,
        "e2e_threads": plan.e2e_threads,
        "e2e_seconds": plan.e2e_seconds,
    }
    doc = {
        "schema": "dcrn-bench/1",
        "created": created,
        "command": "dcrn bench " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]),
        "quick": args.quick,
        "machine": describe_machine(),
        "load_avg_start": load_start,
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "model": model_info,
        "settings": settings,
        "default_backend": {
            "name": default.name,
            "device": default.device,
            "precision": default.precision,
            "reason": default.reason,
        },
        "backends": {report.name: report.to_dict() for report in reports},
        "targets": [asdict(t) for t in check_targets(reports)],
    }
    print(format_table(doc), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        log.info("wrote %s", args.json)
    return 0


def _plan(args: argparse.Namespace, folder: Path) -> tuple[_Plan, dict]:
    """Check the options, load the model (a fresh one is saved to ``folder`` for the pipeline)."""
    from dataclasses import replace

    import torch

    from dcrn.engine.bench.step import BenchSettings
    from dcrn.models.errors import ConfigError

    settings = BenchSettings.quick() if args.quick else BenchSettings()
    settings = replace(settings, batches=tuple(_int_list(args.batches, "--batches")))
    if args.stream_frames is not None:
        settings = replace(settings, stream_frames=args.stream_frames)
    shortest = settings.drift_at + 2 * settings.drift_span
    if settings.stream_frames < shortest:
        raise ConfigError(f"--stream-frames must be >= {shortest}, got {settings.stream_frames}")
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    e2e_threads = _int_list(args.e2e_threads, "--e2e-threads") if args.e2e_threads.strip() else []
    device = _device(args.device)
    model, info, checkpoint = _load_model(args.model, args.input_size, folder)
    int8 = None
    if args.int8 or INT8 in (args.backend or []):
        from dcrn.engine.backends.quantize import calibration_for
        from dcrn.engine.errors import BackendUnavailable
        from dcrn.models import load_checkpoint

        try:
            int8 = calibration_for(load_checkpoint(checkpoint)[1], args.calibration)
        except BackendUnavailable as exc:
            int8 = str(exc)
    plan = _Plan(
        model=model,
        checkpoint=checkpoint,
        settings=settings,
        device=device,
        dtype=torch.float16 if args.fp16 and device.type == "cuda" else torch.float32,
        threads=args.threads,
        e2e_threads=e2e_threads,
        e2e_seconds=args.e2e_seconds if args.e2e_seconds is not None else (6.0 if args.quick else 20.0),
        int8=int8,
    )
    return plan, info


def _bench_one(name: str, plan: _Plan):
    """Open one backend, run the micro-benchmarks on it, then the end-to-end runs; or say why it cannot run."""
    import torch

    from dcrn.engine.backends.choice import CPU_ONLY, create_backend
    from dcrn.engine.bench.e2e import run_e2e
    from dcrn.engine.bench.report import BackendReport
    from dcrn.engine.bench.step import bench_backend, make_inputs
    from dcrn.engine.bench.window import window_runner
    from dcrn.engine.errors import BackendUnavailable
    from dcrn.models.errors import ConfigError

    runtime = "onnxruntime" if name == INT8 else name
    device = torch.device("cpu") if runtime in CPU_ONLY else plan.device
    report = BackendReport(name=name, device=str(device), threads=plan.threads)
    torch.set_num_threads(plan.threads)
    max_batch = max(plan.settings.batches)
    int8 = plan.int8 if name == INT8 else None

    def open_backend():
        return create_backend(
            runtime, plan.model, threads=plan.threads, device=device, dtype=plan.dtype, max_batch=max_batch, int8=int8
        )

    try:
        if isinstance(int8, str):  # no calibration data
            raise BackendUnavailable(int8)
        backend = open_backend()
    except (BackendUnavailable, ConfigError) as exc:
        log.warning("%s: unavailable: %s", name, exc)
        report.available, report.reason = False, str(exc)
        return report
    report.precision = backend.precision
    log.info("%s (%s) on %s: measuring", name, backend.precision, device)
    try:
        window_fn, report.window_baseline = window_runner(
            runtime, plan.model, device=device, dtype=plan.dtype, window=plan.settings.window, threads=plan.threads
        )
        inputs = make_inputs(tuple(plan.model.input_shape), plan.settings.frame_pool, device, plan.dtype)
        report.bench = bench_backend(backend, window_fn, inputs, plan.settings, fresh_backend=open_backend)
    finally:
        backend.close()
    for threads in plan.e2e_threads:
        log.info("%s: end to end on %d thread(s) for %g s", name, threads, plan.e2e_seconds)
        report.e2e[threads] = run_e2e(
            plan.checkpoint,
            runtime,
            device=device,
            dtype=plan.dtype,
            threads=threads,
            seconds=plan.e2e_seconds,
            calibration=int8.data if int8 is not None else None,
        )
    torch.set_num_threads(plan.threads)
    return report


def _load_model(name: str, input_size: int, folder: Path) -> tuple[Any, dict, str]:
    """The model, a description of it, and a checkpoint reference the pipeline can load."""
    from dcrn.models import DCRN, DCRNConfig, load_checkpoint, save_checkpoint

    if name == INIT_MODEL:
        model = DCRN(DCRNConfig(encoder="seed", cell="gru", input_size=input_size), load_pretrained=False).eval()
        label, checkpoint = f"{INIT_MODEL} (freshly initialised)", str(save_checkpoint(folder / "init.pt", model))
    else:
        model, meta = load_checkpoint(name)
        label, checkpoint = name, meta["path"]
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    encoder = f"seed CNN {'-'.join(map(str, config.encoder_widths))}" if config.encoder == "seed" else config.encoder
    summary = (
        f"{encoder} + {config.cell.upper()} {getattr(model.cell, 'out_features', config.hidden_size)}, "
        f"{config.input_size} px, "
        f"{config.num_classes} classes, {params:,} parameters"
    )
    return model, {"name": label, "summary": summary, "parameters": params, "config": config.to_dict()}, checkpoint


def _int_list(text: str, option: str, high: int = 1024) -> list[int]:
    """Comma-separated whole numbers from 1 to ``high`` (batch sizes, thread counts)."""
    from dcrn.models.errors import ConfigError

    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1 or max(values) > high:
        raise ConfigError(f"{option} takes whole numbers from 1 to {high}, got {text!r}")
    return values


def _device(text: str):
    """``auto`` -> a CUDA GPU when there is one, else the CPU; anything else as given (checked by the backend)."""
    import torch

    from dcrn.models.errors import ConfigError

    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {text!r}")
    return device
