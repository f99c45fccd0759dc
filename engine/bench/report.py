"""Bench results as data: the machine they were taken on, the JSON document, the targets and the table."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import psutil
import torch

from dcrn.engine.bench.e2e import E2EResult
from dcrn.engine.bench.step import BackendBench

SCHEMA = "dcrn-bench/1"


@dataclass
class BackendReport:
    """One backend's results, or why it could not run here."""

    name: str
    device: str = "cpu"
    precision: str = ""  # what the step computed in: fp32, fp16, bf16 or int8 (the opened backend's)
    available: bool = True
    reason: str = ""  # why it is unavailable
    threads: int = 1  # CPU threads of the step, throughput, window and drift measurements
    window_baseline: str = ""  # how the sliding-window baseline ran
    bench: BackendBench | None = None
    e2e: dict[int, E2EResult] = field(default_factory=dict)  # CPU threads -> end-to-end run

    def to_dict(self) -> dict[str, Any]:
        if not self.available:
            return {"available": False, "device": self.device, "reason": self.reason}
        out: dict[str, Any] = {
            "available": True,
            "device": self.device,
            "precision": self.precision,
            "threads": self.threads,
        }
        if self.bench is not None:
            steps, window, drift = self.bench.steps, self.bench.window, self.bench.drift
            out |= {
                "step_ms_p50": steps.step_ms_p50,
                "step_ms_p99": steps.step_ms_p99,
                "step_ms_mean": steps.step_ms_mean,
                "throughput_fps": {str(b): fps for b, fps in steps.throughput_fps.items()},
                "window": window.window,
                "window_baseline": self.window_baseline,
                "window_ms_p50": window.window_ms_p50,
                "window_step_ms_p50": window.step_ms_p50,
                "window_ratio": window.window_ratio,
                "drift": drift.drift,
                "drift_same_backend": drift.drift_same_backend,
                "drift_wall": drift.drift_wall,
                "drift_cpu": drift.drift_cpu,
                "drift_side_late_ms": drift.side_late_ms,
                "drift_side_early_ms": drift.side_early_ms,
                "drift_frames": drift.frames,
                "drift_early_frame": drift.early_frame,
                "drift_late_frame": drift.late_frame,
                "drift_early_ms": drift.early_ms,
                "drift_late_ms": drift.late_ms,
                "drift_seconds": drift.seconds,
                "rss_start_mb": drift.rss_start_mb,
                "rss_end_mb": drift.rss_end_mb,
                "rss_max_mb": drift.rss_max_mb,
                "rss_growth_mb": drift.rss_growth_mb,
                "drift_curve": [{"frame": f, "step_ms_p50": ms, "rss_mb": mb} for f, ms, mb in drift.curve],
            }
            if drift.gpu_mem_growth_mb is not None:
                out["gpu_mem_growth_mb"] = drift.gpu_mem_growth_mb
        if self.e2e:
            headline = self.e2e[min(self.e2e)]  # the fewest threads: the target is on one
            out |= {"e2e_ms_p50": headline.ms_p50, "e2e_ms_p99": headline.ms_p99, "dropped": headline.dropped}
            out["e2e"] = {str(threads): asdict(result) for threads, result in sorted(self.e2e.items())}
        return out


def describe_machine() -> dict[str, Any]:
    """Cores, CPU model, GPU, library versions and the load right now."""
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    for module in ("onnxruntime", "openvino", "numpy"):
        try:
            info[module] = str(__import__(module).__version__).split("-")[0]  # openvino: 2026.4.1-22982-...
        except ImportError:
            info[module] = None
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Target:
    name: str
    backend: str
    value: float
    limit: str  # the target as text (">= 12", "<= 1.05", ...)
    met: bool


def check_targets(reports: list[BackendReport]) -> list[Target]:
    """The issue's targets, each checked on every backend that ran (CPU ones on CPU, GPU ones on GPU)."""
    targets: list[Target] = []
    for report in reports:
        if not report.available or report.bench is None:
            continue
        bench, name = report.bench, report.name
        ratio, drift = bench.window.window_ratio, bench.drift.drift
        targets.append(Target("window recompute / step", name, ratio, ">= 12", ratio >= 12))
        targets.append(
            Target(f"drift at frame {bench.drift.frames:,}", name, drift, "within 5%", abs(drift - 1) <= 0.05)
        )
        growth = bench.drift.rss_growth_mb
        targets.append(Target("RSS growth MB", name, growth, "< 10", growth < 10))
        if report.device.startswith("cuda"):
            p50, best = bench.steps.step_ms_p50, max(bench.steps.throughput_fps.values())
            targets.append(Target("batch-1 step ms", name, p50, "<= 0.3", p50 <= 0.3))
            targets.append(Target("best frames/s", name, best, ">= 50,000", best >= 50_000))
        elif 1 in report.e2e:
            e2e = report.e2e[1]
            targets.append(Target("e2e drops, 1 thread", name, e2e.dropped, "== 0", e2e.dropped == 0))
            targets.append(Target("e2e p99 ms, 1 thread", name, e2e.ms_p99, "< 15", e2e.ms_p99 < 15))
    return targets


def format_table(doc: dict[str, Any]) -> str:
    """The human table: one column per backend, one row per measurement, then the targets."""
    backends: dict[str, dict] = doc["backends"]
    names = list(backends)
    machine, model = doc["machine"], doc["model"]
    lines = [
        f"dcrn bench{' --quick' if doc['quick'] else ''}  {doc['created']}",
        f"model    {model['name']}: {model['summary']}",
        f"machine  {machine['cpu_model']}, {machine['logical_cores']} cores, GPU: {machine['gpu'] or 'none'}; "
        f"torch {machine['torch']}, onnxruntime {machine['onnxruntime']}, openvino {machine.get('openvino')}",
        f"load     {' '.join(map(str, doc['load_avg_start']))} at start, "
        f"{' '.join(map(str, doc['load_avg_end']))} at end (1/5/15 min)",
    ]
    if doc.get("default_backend"):
        default = doc["default_backend"]
        precision = f" {default['precision']}" if default.get("precision") else ""
        lines.append(f"default  {default['name']}{precision} on {default['device']} ({default['reason']})")
    lines += [
        "",
    ]
    rows: list[tuple[str, list[str]]] = [
        ("backend", names),
        ("device", [backends[n]["device"] for n in names]),
        ("precision", [backends[n].get("precision") or "-" for n in names]),
    ]

    def row(label: str, key: str, fmt: str = "{:.3f}", sub: str | None = None) -> None:
        cells = []
        for name in names:
            data = backends[name]
            if not data["available"]:
                cells.append("unavailable" if label == "step ms p50 (batch 1)" else "-")
                continue
            value = data.get(key)
            if sub is not None and isinstance(value, dict):
                value = value.get(sub)
            cells.append("-" if value is None else fmt.format(value))
        rows.append((label, cells))

    threads = next((b["threads"] for b in backends.values() if b["available"]), 1)
    rows.append((f"-- step, {threads} thread(s)", [""] * len(names)))
    row("step ms p50 (batch 1)", "step_ms_p50")
    row("step ms p99 (batch 1)", "step_ms_p99")
    batches = sorted({int(b) for d in backends.values() for b in d.get("throughput_fps", {})})
    for batch in batches:
        row(f"frames/s at batch {batch}", "throughput_fps", "{:,.0f}", str(batch))
    rows.append(("-- sliding window", [""] * len(names)))
    row("window T=16 recompute ms", "window_ms_p50")
    row("step ms (interleaved)", "window_step_ms_p50")
    row("window / step", "window_ratio", "{:.1f}x")
    frames = next((b["drift_frames"] for b in backends.values() if b.get("drift_frames")), 0)
    rows.append((f"-- one stream of {frames:,} frames", [""] * len(names)))
    row("step ms at ~100 (at the start)", "drift_early_ms")
    row(f"step ms at ~{frames:,} (at the end)", "drift_late_ms")
    row("  ratio, spans at own times", "drift_wall", "{:.3f}")
    row("  same in process CPU time", "drift_cpu", "{:.3f}")
    row(f"side by side: ms at ~{frames:,}", "drift_side_late_ms")
    row("  ms at ~100, fresh backend", "drift_side_early_ms")
    row("  drift (ratio)", "drift", "{:.3f}")
    row("  ratio vs same backend", "drift_same_backend", "{:.3f}")
    rows.append(("step ms, 1k-frame medians", [_curve_range(backends[n]) for n in names]))
    row("RSS start MB", "rss_start_mb", "{:.1f}")
    row("RSS growth MB", "rss_growth_mb", "{:+.2f}")
    for threads in sorted({int(t) for d in backends.values() for t in d.get("e2e", {})}):
        rows.append((f"-- end to end, 30 fps, {threads} thread(s)", [""] * len(names)))
        rows.append(("frames", [_e2e(backends[n], threads, "frames", "{:,}") for n in names]))
        rows.append(("added latency ms p50", [_e2e(backends[n], threads, "ms_p50", "{:.2f}") for n in names]))
        rows.append(("added latency ms p99", [_e2e(backends[n], threads, "ms_p99", "{:.2f}") for n in names]))
        rows.append(("dropped", [_e2e(backends[n], threads, "dropped", "{:,}") for n in names]))
        for stage in ("capture", "preprocess", "step", "sink"):
            label = f"  of which {stage} p50/p99"
            rows.append((label, [_stage(backends[n], threads, stage) for n in names]))
    width = max(len(label) for label, _ in rows) + 2
    col = max(12, *(len(c) + 2 for _, cells in rows for c in cells))
    for label, cells in rows:
        if label.startswith("--"):
            lines.append(label)
        else:
            lines.append(f"  {label:<{width}}" + "".join(f"{c:>{col}}" for c in cells))
    lines.append("")
    lines.append("targets")
    for target in doc["targets"]:
        mark = "met   " if target["met"] else "MISSED"
        value = f"{target['value']:,.3f}" if isinstance(target["value"], float) else f"{target['value']:,}"
        lines.append(f"  {mark} {target['backend']:<12} {target['name']:<28} {value:>12}  (target {target['limit']})")
    for name in names:
        if not backends[name]["available"]:
            lines.append(f"  {name}: unavailable: {backends[name]['reason']}")
    return "\n".join(lines)


def _e2e(data: dict, threads: int, key: str, fmt: str) -> str:
    run = data.get("e2e", {}).get(str(threads))
    return "-" if not run or run.get(key) is None else fmt.format(run[key])


def _stage(data: dict, threads: int, stage: str) -> str:
    """``p50/p99`` of one pipeline stage in the run's final stats record (capture = waiting in the ring)."""
    run = data.get("e2e", {}).get(str(threads)) or {}
    values = (run.get("stages") or {}).get(stage) or {}
    if values.get("p50") is None:
        return "-"
    return f"{values['p50']:.1f}/{values['p99']:.1f}"


def _curve_range(data: dict) -> str:
    """Lowest and highest median step time over the stream's blocks of frames: how flat the curve is."""
    curve = data.get("drift_curve") or []
    if not curve:
        return "-"
    values = [point["step_ms_p50"] for point in curve]
    return f"{min(values):.2f}..{max(values):.2f}"
