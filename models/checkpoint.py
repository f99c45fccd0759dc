"""Checkpoints: the config travels with the weights, so a checkpoint alone rebuilds its model.

A checkpoint is a ``torch.save`` of plain data (loaded back with ``weights_only=True``)::

    {"format": "dcrn-live-checkpoint", "version": 1, "config": {...DCRNConfig...},
     "state_dict": {...}, "meta": {...}, "training": {...optional resume state...}}

``load_checkpoint`` also takes the name of a shipped model (``default``, ...), found in ``shipped/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import DCRNConfig
from .dcrn import DCRN
from .errors import BadCheckpoint, CheckpointNotFound, ConfigError
from .files import atomic_file

FORMAT = "dcrn-live-checkpoint"
VERSION = 1
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"


def shipped_models() -> dict[str, Path]:
    """Shipped model name -> checkpoint file."""
    return {path.stem: path for path in sorted(SHIPPED_DIR.glob("*.pt"))}


def resolve_model(path_or_name: str | os.PathLike) -> Path:
    """The file of the shipped model with that name, or a checkpoint path.

    A shipped model's name (``default``) always means the shipped model, even when the working folder
    holds a file of that name: a stray file must not silently replace it. Such a file is loaded only when
    written as a path, with a ``/`` or a ``.pt`` suffix (``./default``).
    """
    text = os.fspath(path_or_name)
    shipped = shipped_models()
    if text in shipped and not looks_like_path(text):
        return shipped[text]
    path = Path(text)
    if path.is_file():
        return path
    if path.exists():
        raise BadCheckpoint(f"{path}: is not a file")
    names = ", ".join(shipped) or "none installed"
    raise CheckpointNotFound(f"no checkpoint file {str(path)!r} and no shipped model of that name (shipped: {names})")


def looks_like_path(text: str) -> bool:
    """Whether a ``--model`` value is a path (holds a folder separator or ends with ``.pt``), not a name."""
    return "/" in text or os.sep in text or text.endswith(".pt")


def save_checkpoint(
    path: str | os.PathLike, model: DCRN, *, meta: dict | None = None, training: dict | None = None
) -> Path:
    """Write atomically (temporary file + rename): a crash mid-write never destroys the previous file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    if training is not None:
        payload["training"] = training
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path_or_name: str | os.PathLike) -> dict:
    """The checkpoint's raw payload, validated; errors name the file and the problem."""
    path = resolve_model(path_or_name)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for bad files
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadCheckpoint(f"{path}: not a readable checkpoint (truncated or corrupt?): {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BadCheckpoint(f"{path}: not a DCRN Live checkpoint (no '{FORMAT}' format marker)")
    if payload.get("version") != VERSION:
        version = repr(payload.get("version"))[:40]  # any value: shown escaped and short
        raise BadCheckpoint(f"{path}: checkpoint version {version}; this build reads {VERSION}")
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise BadCheckpoint(f"{path}: checkpoint has no {key!r} section")
    if not isinstance(payload.get("meta", {}), dict):
        raise BadCheckpoint(f"{path}: checkpoint 'meta' section is not a mapping")
    payload["path"] = str(path)
    return payload


def load_checkpoint(path_or_name: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[DCRN, dict]:
    """Rebuild the model from a checkpoint file or shipped model name -> (model in eval mode, meta)."""
    payload = read_checkpoint(path_or_name)
    model = model_from_payload(payload)
    model.to(map_location).eval()
    meta = dict(payload.get("meta", {}))
    meta["path"] = payload["path"]
    return model, meta


def model_from_payload(payload: dict) -> DCRN:
    """The model (on the CPU) of a :func:`read_checkpoint` payload, its weights loaded.

    A checkpoint is untrusted: its config is bounded (DCRNConfig) and the model is first built on the
    ``meta`` device, which allocates nothing, to check every weight's shape against the config; only then
    is the real model allocated, no larger than the weights the file holds.
    """
    path = payload["path"]
    try:
        config = DCRNConfig.from_dict(payload["config"])
        with torch.device("meta"):
            skeleton = DCRN(config, load_pretrained=False)
    except (ConfigError, TypeError, ValueError, RuntimeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadCheckpoint(f"{path}: invalid model config: {reason}") from None
    _check_weights(path, payload["state_dict"], skeleton)
    model = DCRN(config, load_pretrained=False)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise BadCheckpoint(f"{path}: weights do not fit the stored config: {reason}") from None
    return model


def _check_weights(path: str, state_dict: dict, skeleton: DCRN) -> None:
    """BadCheckpoint unless ``state_dict`` holds exactly the tensors ``skeleton`` (on ``meta``) has, shape
    for shape: a checkpoint whose config and weights disagree is refused before anything is allocated."""
    expected = skeleton.state_dict()
    unexpected = [key for key in state_dict if key not in expected]
    missing = [key for key in expected if key not in state_dict]
    if unexpected or missing:
        shown = [repr(str(k)[:40]) for k in unexpected[:3]] + missing[:3]
        raise BadCheckpoint(
            f"{path}: weights do not fit the stored config: {len(missing)} missing, {len(unexpected)} unexpected "
            f"({', '.join(map(str, shown))})"
        )
    for name, want in expected.items():
        got = state_dict[name]
        if not isinstance(got, torch.Tensor):
            raise BadCheckpoint(f"{path}: weight {name!r} is not a tensor")
        if got.shape != want.shape:
            raise BadCheckpoint(
                f"{path}: weights do not fit the stored config: {name} has shape {tuple(got.shape)}, "
                f"the config needs {tuple(want.shape)}"
            )
