"""Backends: one small interface over the ways a DCRN step can run (torch, ONNX Runtime, OpenVINO,
TensorRT), the rule that chooses one, the exported step graph and its cache."""
