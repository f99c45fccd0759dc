#!/usr/bin/env python3
"""One-shot check of the CUDA paths on a lent GPU machine: parity, per-step latency, ring upload.

Runs from a plain copy of the repository without installing it (an import shim maps ``dcrn.models``,
``dcrn.engine`` and ``dcrn.app`` to the folders), with only torch (+CUDA), torchvision and numpy:

    python scripts/gpu_check.py                  # on the GPU machine; JSON goes to $OUT/gpu_check.json
    python scripts/gpu_check.py --cpu-dry-run    # everything except CUDA, on any machine

Checks, for the default model's config (the shipped ``default`` model when present):

1. parity of the torch backend on CUDA, eager and CUDA graph, float32 (max abs diff <= 1e-4, TF32 off)
   and float16 (normwise relative error of the logits and of each state tensor <= 1e-2), against CPU
   float32 over a 16-frame stream with the state fed back;
2. per-step latency (host-timed, synchronised, p50/mean/p99) at batch 1 and 64 for each of those;
3. the FrameRing upload (``engine/ring/frame_ring.py``, when present): frames arrive intact, and ``put`` returns
   while the upload is still queued behind busy work on the ring's stream (asynchronous);
4. TensorRT, when installed: the tensorrt backend's parity (else the reason it cannot run here).

Exit status: 0 when every check that ran passed, 1 when one failed, 2 when CUDA is missing.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
import traceback
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FP32_ABS = 1e-4
FP16_REL = 1e-2
PARITY_BATCH = 4  # streams in the parity check


def install_import_shim() -> str:
    """Make ``import dcrn.models`` work from the folders when the project is not pip-installed."""
    try:
        importlib.import_module("dcrn.models")
        return "installed package"
    except ImportError:
        pass
    package = types.ModuleType("dcrn")
    package.__path__ = []  # a package whose children are registered by hand below
    sys.modules["dcrn"] = package
    for name in ("models", "engine", "app"):
        spec = importlib.util.spec_from_file_location(
            f"dcrn.{name}", REPO / name / "__init__.py", submodule_search_locations=[str(REPO / name)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"dcrn.{name}"] = module
        spec.loader.exec_module(module)
        setattr(package, name, module)
    return f"import shim over {REPO}"


class Report:
    """Collects check results and timings; prints a table and writes JSON at the end."""

    def __init__(self) -> None:
        self.checks: list[dict] = []
        self.timings: list[dict] = []
        self.info: dict = {}

    def check(self, name: str, passed: bool | None, detail: str, **values) -> None:
        status = "skip" if passed is None else ("PASS" if passed else "FAIL")
        self.checks.append({"check": name, "status": status, "detail": detail, **values})
        print(f"[{status}] {name}: {detail}", flush=True)

    def failed(self, name: str, exc: BaseException) -> None:
        traceback.print_exc()
        self.check(name, False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    def table(self) -> str:
        lines = ["", "| check | status | detail |", "|---|---|---|"]
        lines += [f"| {c['check']} | {c['status']} | {c['detail'].replace('|', '/')[:160]} |" for c in self.checks]
        if self.timings:
            lines += ["", "| backend | dtype | batch | p50 ms | mean ms | p99 ms |", "|---|---|---|---|---|---|"]
            lines += [
                f"| {t['backend']} | {t['dtype']} | {t['batch']} | {t['p50_ms']:.3f} | {t['mean_ms']:.3f} "
                f"| {t['p99_ms']:.3f} |"
                for t in self.timings
            ]
        return "\n".join(lines)

    def write(self, folder: str | None) -> Path | None:
        if not folder:
            return None
        path = Path(folder) / "gpu_check.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"info": self.info, "checks": self.checks, "timings": self.timings}, indent=2))
        return path


def load_model(name: str):
    """The shipped/checkpoint model ``name``, or the default config with seeded random weights."""
    import torch

    from dcrn.models import DCRN, DCRNConfig
    from dcrn.models.checkpoint import load_checkpoint
    from dcrn.models.errors import DcrnError

    try:
        model, _ = load_checkpoint(name)
        return model.eval(), f"checkpoint {name!r}"
    except DcrnError as exc:
        torch.manual_seed(0)
        reason = str(exc).splitlines()[0]
        return DCRN(DCRNConfig(), load_pretrained=False).eval(), f"DCRNConfig() defaults, random weights ({reason})"


def make_backends(model, device, dtype, max_batch: int) -> dict:
    """{"eager": ..., "graph": ...} torch backends (on CPU both run eagerly)."""
    from dcrn.engine.backends.choice import create_backend

    backends = {}
    try:
        from dcrn.engine.backends.torch_backend import TorchBackend

        backends["eager"] = TorchBackend(model, device=device, dtype=dtype, max_batch=max_batch, use_graph=False)
    except (ImportError, TypeError) as exc:
        print(f"eager torch backend unavailable ({exc}); checking the registry's backend only", flush=True)
    backends["graph" if device.type == "cuda" else "default"] = create_backend(
        "torch", model, device=device, dtype=dtype, max_batch=max_batch
    )
    return backends


def stream_parity(backend, model, device, *, batch: int = PARITY_BATCH, steps: int = 16) -> dict:
    """How far the backend's logits and state stray from CPU float32 over a fed-back stream.

    ``max_abs``: the largest elementwise difference; ``rel``: the worst normwise relative error
    ``|got - ref| / |ref|`` of any one tensor (logits, each state tensor) at any step; ``top1``: the
    fraction of (step, item) pairs whose arg-max class agrees.
    """
    import torch

    size = model.config.input_size
    clip = torch.randn(batch, steps, 3, size, size, generator=torch.Generator().manual_seed(1))  # (B, T, 3, H, W)
    ref_state, state = model.initial_state(batch), backend.initial_state(batch)
    max_abs, rel, agree = 0.0, 0.0, 0
    for t in range(steps):
        with torch.no_grad():
            expected, ref_state = model.step(clip[:, t], ref_state)  # (B, C) float32 on CPU
        logits, state = backend.step(clip[:, t].to(device), state)
        agree += int((logits.float().cpu().argmax(-1) == expected.argmax(-1)).sum())
        pairs = [(logits, expected), *zip(state, ref_state, strict=True)]
        for got, ref in pairs:
            diff = got.float().cpu() - ref
            max_abs = max(max_abs, diff.abs().max().item())
            rel = max(rel, (diff.norm() / ref.norm().clamp_min(1e-12)).item())
    return {"max_abs": max_abs, "rel": rel, "top1": agree / (steps * batch)}


def step_latency(backend, model, device, batch: int, iters: int, warmup: int) -> dict:
    import torch

    size = model.config.input_size
    frames = torch.rand(batch, 3, size, size, device=device)
    state = backend.initial_state(batch)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        _, state = backend.step(frames, state)
    sync()
    times = []
    for _ in range(iters):
        started = time.perf_counter()
        _, state = backend.step(frames, state)
        sync()
        times.append((time.perf_counter() - started) * 1e3)
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "mean_ms": statistics.fmean(times),
        "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))],
    }


def check_torch_backends(report: Report, model, device, args) -> None:
    import torch

    for dtype in (torch.float32, torch.float16):
        dname = str(dtype).removeprefix("torch.")
        try:
            backends = make_backends(model, device, dtype, max(*args.batches, PARITY_BATCH))
        except Exception as exc:
            report.failed(f"torch backend {dname}: create", exc)
            continue
        for mode, backend in backends.items():
            name = f"torch {mode} {dname} parity vs CPU fp32"
            try:
                parity = stream_parity(backend, model, device)
                if dtype == torch.float32:
                    worst = parity["max_abs"]
                    report.check(
                        name, worst <= FP32_ABS, f"max abs diff {worst:.2e} (limit {FP32_ABS:.0e})", diff=worst
                    )
                else:
                    # float16 keeps ~3 significant digits: single elements of a gated state can move by a few
                    # 1e-2 where a gate sits on its steep part, so judge each tensor as a whole. The top-1
                    # agreement is reported, not required: random frames can leave two classes nearly tied.
                    rel, top1 = parity["rel"], parity["top1"]
                    report.check(
                        name,
                        rel <= FP16_REL,
                        f"normwise relative error {rel:.2e} (limit {FP16_REL:.0e}), top-1 agrees on {top1:.0%}, "
                        f"max abs diff {parity['max_abs']:.2e}",
                        rel=rel,
                        top1=top1,
                        diff=parity["max_abs"],
                    )
            except Exception as exc:
                report.failed(name, exc)
            for batch in args.batches:
                try:
                    timing = step_latency(backend, model, device, batch, args.iters, args.warmup)
                    report.timings.append({"backend": f"torch {mode}", "dtype": dname, "batch": batch, **timing})
                    print(f"  torch {mode} {dname} batch {batch}: p50 {timing['p50_ms']:.3f} ms", flush=True)
                except Exception as exc:
                    report.failed(f"torch {mode} {dname} latency batch {batch}", exc)
            getattr(backend, "close", lambda: None)()


def check_ring(report: Report, device) -> None:
    """Frames come out of the ring intact; on CUDA, put() returns before its upload has run."""
    import numpy as np
    import torch

    if not (REPO / "engine" / "ring" / "frame_ring.py").is_file():
        report.check("ring upload", None, "engine/ring/frame_ring.py is not in this build")
        return
    from dcrn.engine.frames import Frame
    from dcrn.engine.ring.frame_ring import FrameRing

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(6)]
    ring = FrameRing(capacity=3, device=device)
    intact = True
    for start in (0, 3):  # two rounds through the three slots
        for i in range(start, start + 3):
            ring.put(Frame(stream="check", seq=i, pts=i / 30, image=images[i]))
        for i in range(start, start + 3):
            with ring.get(timeout=5) as item:
                intact &= item.frame.seq == i and torch.equal(item.tensor.cpu(), torch.from_numpy(images[i]))
    report.check("ring upload correct", intact, f"6 frames of 480x640 through 3 slots on {device.type}")
    if device.type != "cuda":
        report.check("ring upload asynchronous", None, "CUDA only (dry run)")
        return
    big = rng.integers(0, 256, (2160, 3840, 3), dtype=np.uint8)  # 25 MB
    ring = FrameRing(capacity=2, device=device)
    ring.put(Frame(stream="warm", seq=0, pts=0.0, image=big))  # allocate the slot first
    ring.get(timeout=5).release()
    torch.cuda.synchronize()
    with torch.cuda.stream(ring.stream):
        torch.cuda._sleep(200_000_000)  # keep the upload stream busy (~0.1 s)
    started = time.perf_counter()
    ring.put(Frame(stream="big", seq=1, pts=0.0, image=big))
    put_ms = (time.perf_counter() - started) * 1e3
    slots = [s.device_slot for s in ring._slots if getattr(s, "device_slot", None) is not None]
    queued = any(not slot.ready.query() for slot in slots)  # the upload's event has not fired yet
    item = ring.get(timeout=5)
    total = item.tensor.sum(dtype=torch.int64).item()  # consumer stream waits on the slot's event
    item.release()
    correct = total == int(big.sum(dtype=np.int64))
    report.check(
        "ring upload asynchronous",
        queued and correct,
        f"put returned in {put_ms:.1f} ms with the upload still queued={queued}; consumer read it intact={correct}",
        put_ms=put_ms,
    )


def check_tensorrt(report: Report, model, device) -> None:
    from dcrn.engine.errors import BackendUnavailable

    try:
        from dcrn.engine.backends.tensorrt_backend import TensorRTBackend

        backend = TensorRTBackend(model, device=device, max_batch=PARITY_BATCH)
    except BackendUnavailable as exc:
        report.check("tensorrt backend", None, str(exc).splitlines()[0][:200])
        return
    except Exception as exc:
        report.failed("tensorrt backend", exc)
        return
    try:
        worst = stream_parity(backend, model, device)["max_abs"]
        report.check("tensorrt fp32 parity vs CPU fp32", worst <= 1e-3, f"max abs diff {worst:.2e} (limit 1e-3)")
    except Exception as exc:
        report.failed("tensorrt fp32 parity vs CPU fp32", exc)
    backend.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="run every check on the CPU (no CUDA)")
    parser.add_argument("--model", default="default", help="checkpoint or shipped model (default: default)")
    parser.add_argument("--batches", default="1,64", help="batch sizes to time (default 1,64)")
    parser.add_argument("--iters", type=int, default=None, help="timed steps per case (default 200; dry run 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 20; dry run 1)")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for gpu_check.json (default $OUT)")
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.iters = args.iters or (3 if args.cpu_dry_run else 200)
    args.warmup = args.warmup or (1 if args.cpu_dry_run else 20)

    report = Report()
    report.info["imports"] = install_import_shim()
    import torch

    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device; use --cpu-dry-run to exercise the script without one")
        return 2
    device = torch.device("cpu" if args.cpu_dry_run else "cuda", None if args.cpu_dry_run else 0)
    # float32 parity means float32: TF32 would round convolutions and matmuls to 10-bit mantissas.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model, source = load_model(args.model)
    report.info.update(
        device=torch.cuda.get_device_name(0)
        if device.type == "cuda"
        else f"CPU dry run ({platform.machine()}, {os.cpu_count()} cores)",
        torch=torch.__version__,
        cuda=torch.version.cuda,
        python=platform.python_version(),
        model=source,
        config=model.config.to_dict(),
        tf32="off",
    )
    print(f"gpu_check on {report.info['device']}: torch {torch.__version__}, model: {source}", flush=True)
    check_torch_backends(report, model, device, args)
    try:
        check_ring(report, device)
    except Exception as exc:
        report.failed("ring upload", exc)
    check_tensorrt(report, model, device)
    print(report.table())
    written = report.write(args.out)
    if written:
        print(f"\nwrote {written}")
    return 1 if any(c["status"] == "FAIL" for c in report.checks) else 0


if __name__ == "__main__":
    sys.exit(main())
