"""Fill a feature cache (``dcrn train --feature-cache``) with features of the INT8 encoder instead of float32.

    .venv/bin/python scripts/int8_features.py --data ../shared/data/fight-cctv --model fight-cctv \
        --out runs/fight-cctv/features-int8

The frozen encoder of ``--model`` is quantised as ``--int8`` does (engine.quantize, calibrated on
``--data``), cut at its pooled output, and run over every frame of every clip; the features are written
where :class:`dcrn.models.features.FeatureStore` looks for them (same keys as the float32 cache, in
another folder). Training the cell on them (``dcrn train ... --feature-cache OUT``) lets it see the
quantisation noise it meets when it runs with ``--int8``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from dcrn.engine.backends.quantize import calibration_for, int8_graph
from dcrn.models import load_checkpoint
from dcrn.models.data import scan
from dcrn.models.features import FeatureStore


def encoder_output(proto: onnx.ModelProto) -> str:
    """The tensor the cell reads: the first non-encoder node's input that an encoder/pool node made."""
    made = {o: n.name for n in proto.graph.node for o in n.output}
    for node in proto.graph.node:
        if node.name.startswith("/cell/"):
            for name in node.input:
                if name in made and not made[name].startswith("/cell/"):
                    return name
    raise SystemExit("no encoder output found in the step graph")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default="fight-cctv")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/int8-cache"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    model, meta = load_checkpoint(args.model)
    path = int8_graph(model, calibration_for(meta, args.data), args.cache_dir)
    proto = onnx.load(str(path))
    cut = args.cache_dir / f"{path.stem}-encoder.onnx"
    onnx.utils.extract_model(str(path), str(cut), ["frame"], [encoder_output(proto)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(cut), options, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name

    def encode(x: torch.Tensor) -> torch.Tensor:  # (b, 3, S, S) normalised -> (b, F)
        return torch.from_numpy(session.run([output], {"frame": x.float().contiguous().numpy()})[0])

    model.encode = encode  # FeatureStore computes every frame's feature through model.encode
    FeatureStore(scan(args.data, model.config.class_names), model, cache_dir=args.out)
    logging.info("INT8 features of %s in %s", args.data, args.out)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
