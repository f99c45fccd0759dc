"""Backend names, without importing any runtime: the command line's parsers read them for ``--help``."""

from __future__ import annotations

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
CPU_ONLY = ("onnxruntime", "openvino")  # backends that run on the CPU alone
AUTO = "auto"
BACKEND_CHOICES = (AUTO, *BACKENDS)  # what --backend accepts
