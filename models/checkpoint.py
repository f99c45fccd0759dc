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
    """A checkpoint path, or the file of the shipped model with that name."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    shipped = shipped_models()
    if str(path_or_name) in shipped:
        return shipped[str(path_or_name)]
    if path.exists():
        raise BadCheckpoint(f"{path}: is not a file")
    names = ", ".join(shipped) or "none installed"
    raise CheckpointNotFound(f"no checkpoint file {str(path)!r} and no shipped model of that name (shipped: {names})")


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
        raise BadCheckpoint(f"{path}: checkpoint version {payload.get('version')!r}; this build reads {VERSION}")
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise BadCheckpoint(f"{path}: checkpoint has no {key!r} section")
    payload["path"] = str(path)
    return payload


def load_checkpoint(path_or_name: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[DCRN, dict]:
    """Rebuild the model from a checkpoint file or shipped model name -> (model in eval mode, meta)."""
    payload = read_checkpoint(path_or_name)
    path = payload["path"]
    try:
        config = DCRNConfig.from_dict(payload["config"])
        model = DCRN(config, load_pretrained=False)
    except (ConfigError, TypeError) as exc:
        raise BadCheckpoint(f"{path}: invalid model config: {exc}") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise BadCheckpoint(f"{path}: weights do not fit the stored config: {reason}") from None
    model.to(map_location).eval()
    meta = dict(payload.get("meta", {}))
    meta["path"] = path
    return model, meta
