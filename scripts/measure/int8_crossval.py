"""What INT8 (and bf16) do to a cross-validated model: each fold scored with its float32 and its INT8 step graph.

    .venv/bin/python -m scripts.measure.int8_crossval --data ../shared/data/fight-cctv \
        --json runs/fight-cctv/int8-cv.json runs/fight-cctv/cv/fold{1..5}.last.pt
    .venv/bin/python -m scripts.measure.int8_crossval --data ../shared/data/fight-cctv --no-int8 --openvino \
        --json runs/fight-cctv/bf16-cv.json runs/fight-cctv/cv/fold{1..5}.last.pt

``--openvino`` adds a column: the float32 graph compiled by OpenVINO the way the ``openvino`` backend
compiles it (bf16 where the CPU has it natively, the precision ``auto`` picks); ``--no-int8`` leaves INT8 out.

For every fold checkpoint (``dcrn train --val-groups``, as scripts/train-fight-cctv makes them) the encoder
is quantised on frames of that fold's **training** groups only (``Calibration.exclude_groups`` = its
held-out groups), and both graphs run the held-out clips the way the streaming pipeline does: one ONNX
Runtime thread, frame by frame from a fresh state, the clip's prediction the one at its last frame (as
``dcrn eval`` and ``python -m dcrn.models.crossval score`` score clips). The float32 graph's numbers should
match the torch scores of the cross-validation; the difference to the INT8 graph is the accuracy change.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dcrn.engine.backends.quantize import Calibration, int8_graph
from dcrn.engine.backends.step_graph import exported_graph
from dcrn.models import load_checkpoint
from dcrn.models.data import scan
from dcrn.models.video_io import read_video
from scripts.measure import harness

log = logging.getLogger("int8_crossval")


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OpenVinoSession:
    """An ONNX file compiled as the openvino backend compiles it, answering ``run`` like an ORT session."""

    def __init__(self, path: Path) -> None:
        from dcrn.engine.backends.openvino_backend import compile_cpu

        compiled, self.precision = compile_cpu(path, threads=1)
        self.request = compiled.create_infer_request()
        self.ports = {name: port for port in compiled.outputs for name in port.get_names()}

    def run(self, outputs: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self.request.infer(feed, share_outputs=False)
        return [results[self.ports[name]] for name in outputs]


def last_frame_predictions(sessions: dict, model, clips) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each session's class at the last frame of every clip (fresh state each), and its seconds per frame."""
    config = model.config
    mean = np.asarray(config.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(config.std, np.float32).reshape(1, 3, 1, 1)
    preds = {name: [] for name in sessions}
    spent = dict.fromkeys(sessions, 0.0)
    frames_done = 0
    for sample in clips:
        frames, _ = read_video(sample.path, config.input_size)  # (T, S, S, 3) uint8, as the pipeline resizes
        x = (frames.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - mean) / std  # (T, 3, S, S)
        frames_done += len(x)
        for name, sess in sessions.items():
            state = [np.zeros((1, *s), np.float32) for s in model.state_shapes]
            outputs = ["logits", *(f"{n}_out" for n in model.state_names)]
            start = time.perf_counter()
            for t in range(len(x)):
                feed = {"frame": x[t : t + 1], **{f"{n}_in": s for n, s in zip(model.state_names, state, strict=True)}}
                logits, *state = sess.run(outputs, feed)
            spent[name] += time.perf_counter() - start
            preds[name].append(int(logits[0].argmax()))
    return {k: np.array(v) for k, v in preds.items()}, {k: v / max(frames_done, 1) for k, v in spent.items()}


def score_fold(
    path: Path, data: Path, cache: Path, calibration: dict, int8: bool = True, openvino: bool = False
) -> dict:
    model, meta = load_checkpoint(path)
    held = tuple((meta.get("trained_with") or {}).get("val_groups") or [])
    if not held:
        raise SystemExit(f"{path}: no --val-groups in its meta; not a cross-validation fold")
    index = scan(data, model.config.class_names)
    clips = [s for s in index.clips if s.group in held]
    cal = Calibration(str(data), exclude_groups=held, **calibration)
    sessions = {"float32": session(exported_graph(model, cache))}
    if int8:
        sessions["int8"] = session(int8_graph(model, cal, cache))
    if openvino:
        sessions["openvino"] = OpenVinoSession(exported_graph(model, cache))
    preds, per_frame = last_frame_predictions(sessions, model, clips)
    labels = np.array([s.label for s in clips])
    result = {"checkpoint": str(path), "val_groups": list(held), "num_clips": len(clips)}
    for name, p in preds.items():
        recall = [float(np.mean(p[labels == c] == c)) for c in range(len(index.classes)) if (labels == c).any()]
        result[name] = {
            "accuracy": round(float(np.mean(p == labels)), 4),
            "balanced_accuracy": round(float(np.mean(recall)), 4),
            "ms_per_frame": round(per_frame[name] * 1000, 2),
        }
    if "openvino" in sessions:
        result["openvino"]["precision"] = sessions["openvino"].precision
    others = [name for name in preds if name != "float32"]
    agreement = {name: round(float(np.mean(preds["float32"] == preds[name])), 4) for name in others}
    result["agreement"] = agreement.pop("int8") if int8 else None  # with float32, of the INT8 graph
    result.update({f"agreement_{name}": value for name, value in agreement.items()})
    log.info(
        "%s: %d clips, %s", path.name, len(clips),
        ", ".join(f"{name} {result[name]['accuracy']:.3f}" for name in preds),
    )  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--json", type=Path, dest="json_path")
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/int8-cache"), help="float32 and INT8 graphs")
    parser.add_argument("--clips", type=int, default=Calibration.clips, help="calibration clips per fold")
    parser.add_argument("--frames-per-clip", type=int, default=Calibration.frames_per_clip)
    parser.add_argument("--method", default=Calibration.method, choices=["minmax", "percentile", "entropy"])
    parser.add_argument("--no-int8", dest="int8", action="store_false", help="leave the INT8 graph out")
    parser.add_argument("--openvino", action="store_true", help="add the graph as the openvino backend runs it")
    parser.add_argument("checkpoints", nargs="+", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    calibration = {"clips": args.clips, "frames_per_clip": args.frames_per_clip, "method": args.method}
    folds = [score_fold(p, args.data, args.cache_dir, calibration, args.int8, args.openvino) for p in args.checkpoints]
    summary: dict = {"calibration": calibration if args.int8 else None, "folds": folds}
    names = ["float32", *(["int8"] if args.int8 else []), *(["openvino"] if args.openvino else [])]
    clips = sum(f["num_clips"] for f in folds)
    for name in names:
        acc = np.array([f[name]["accuracy"] for f in folds])
        summary[name] = {
            "accuracy_mean": round(float(acc.mean()), 4),
            "accuracy_std": round(float(acc.std()), 4),
            "worst_fold": round(float(acc.min()), 4),
            "pooled_accuracy": round(sum(f[name]["accuracy"] * f["num_clips"] for f in folds) / clips, 4),
            "ms_per_frame_mean": round(float(np.mean([f[name]["ms_per_frame"] for f in folds])), 2),
        }
    for name in names[1:]:
        key = "agreement" if name == "int8" else f"agreement_{name}"
        summary[key] = round(sum(f[key] * f["num_clips"] for f in folds) / clips, 4)
        log.info(
            "float32 %.3f ± %.3f, %s %.3f ± %.3f (pooled %.3f -> %.3f); same class on %.1f%% of clips",
            summary["float32"]["accuracy_mean"], summary["float32"]["accuracy_std"], name,
            summary[name]["accuracy_mean"], summary[name]["accuracy_std"],
            summary["float32"]["pooled_accuracy"], summary[name]["pooled_accuracy"], 100 * summary[key],
        )  # fmt: skip
    if args.json_path:
        harness.write_json(args.json_path, summary)
    return 0


if __name__ == "__main__":
    harness.run(main)
