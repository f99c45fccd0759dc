"""``dcrn export``: the per-frame step graph as ONNX, or built into a TensorRT engine.

``--format onnx`` writes ``(frame, h_in[, c_in]) -> (logits, h_out[, c_out])`` with a dynamic batch axis
and the model's config (labels, input size, normalisation) in the ONNX metadata. ``--format tensorrt``
builds an engine from that graph for batch 1..``--max-batch`` with ``tensorrt`` or ``tensorrt_rtx``, and
writes a JSON note beside it (flavour, version, GPU, options, model config). TensorRT for RTX builds
without a GPU (a portable engine for compute capability 8.0-12.x).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from dcrn.app.argtypes import bounded, positive_int, writable_file

log = logging.getLogger("dcrn.export")

FORMATS = ("onnx", "tensorrt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="default", metavar="CKPT", help="checkpoint path or shipped model name (default: default)"
    )
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="onnx (default) or tensorrt")
    parser.add_argument(
        "--out", required=True, type=writable_file, metavar="PATH", help="the .onnx or .engine file to write"
    )
    parser.add_argument(
        "--fp16", action="store_true", help="float16 weights and state (frame in and logits out stay float32)"
    )
    parser.add_argument(
        "--max-batch",
        type=positive_int,
        default=16,
        metavar="N",
        help="TensorRT: largest batch (streams) per step (default 16)",
    )
    parser.add_argument(
        "--opt-batch",
        type=positive_int,
        default=None,
        metavar="N",
        help="TensorRT: batch to tune kernels for (default: max)",
    )
    parser.add_argument(
        "--flavour",
        choices=("tensorrt", "tensorrt_rtx"),
        default=None,
        help="TensorRT module to use (default: $DCRN_TENSORRT, else tensorrt, then tensorrt_rtx)",
    )
    parser.add_argument("--opset", type=bounded(int, 7, 99, name="opset"), default=None, help="ONNX opset (default 18)")


def main(args: argparse.Namespace) -> int:
    import torch

    from dcrn.models.checkpoint import load_checkpoint
    from dcrn.models.errors import ConfigError
    from dcrn.models.export import DEFAULT_OPSET, export_onnx

    if args.max_batch < 1:
        raise ConfigError(f"--max-batch must be >= 1, got {args.max_batch}")
    opset = args.opset or DEFAULT_OPSET
    model, meta = load_checkpoint(args.model)
    meta = {k: v for k, v in meta.items() if k != "path"}
    if args.format == "onnx":
        dtype = torch.float16 if args.fp16 else torch.float32
        path = export_onnx(model, args.out, opset=opset, dtype=dtype, meta=meta)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opset {opset}, {dtype})")
        return 0
    return _export_tensorrt(args, model, meta, opset)


def _export_tensorrt(args: argparse.Namespace, model, meta: dict, opset: int) -> int:
    import time
    from dataclasses import asdict

    import torch

    from dcrn.engine.backends.trt_build import BuildOptions, build_engine, gpu_identity, load_tensorrt, write_engine
    from dcrn.models.export import export_onnx

    flavour = load_tensorrt(args.flavour)
    options = BuildOptions(fp16=args.fp16, max_batch=args.max_batch, opt_batch=args.opt_batch)
    options.profile()  # validates opt_batch
    gpu = gpu_identity()
    # Strongly typed flavours take their precision from the graph; the others get BuilderFlag.FP16.
    graph_dtype = torch.float16 if args.fp16 and flavour.strongly_typed else torch.float32
    with tempfile.TemporaryDirectory(prefix="dcrn-export-") as tmp:
        onnx_path = export_onnx(model, Path(tmp) / "step.onnx", opset=opset, dtype=graph_dtype, meta=meta)
        log.info(
            "building a TensorRT engine with %s for %s (%s, batch 1..%d); this can take a minute",
            flavour.label,
            gpu,
            "fp16" if args.fp16 else "fp32",
            args.max_batch,
        )
        started = time.perf_counter()
        data = build_engine(onnx_path, flavour, options)
        seconds = time.perf_counter() - started
    info = {"flavour": flavour.name, "version": flavour.version, "gpu": gpu, **asdict(options)}
    info.update(build_seconds=round(seconds, 3), size=len(data), opset=opset, config=model.config.to_dict())
    write_engine(args.out, data, info)
    note = args.out.with_suffix(".json")
    print(f"wrote {args.out} ({len(data) / 1e6:.1f} MB, {flavour.label}, built in {seconds:.1f} s) and {note.name}")
    log.debug("engine note: %s", json.dumps(info))
    return 0
