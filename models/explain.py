"""Which parts of a hand or body drive a taught model's current decision: an explanation a user can read.

A taught ``features`` model is linear from its memory to its scores: ``logits = W z + b`` with ``z`` the
standardised memory, and every memory unit integrates one element of the per-frame vector
(:meth:`~dcrn.models.memory_cell.GammaMemory.input_index`), which is about one finger, limb or the
picture's motion (:func:`~dcrn.models.frame_vector.feature_names`). So the winning class's lead over the
average class splits exactly into one term per unit, and those terms add up per named part:
``share[part] = sum of its units' terms / sum of every term's size``. A share is positive where the part
speaks for the winning class and negative where it speaks against it; their sizes add up to 1.
"""

from __future__ import annotations

import numpy as np
import torch

from .dcrn import DCRN
from .frame_vector import feature_names


@torch.no_grad()
def shares(model: DCRN, memory: np.ndarray, top: int = 6) -> dict:
    """``memory`` (out,): the cell's raw memory for one stream -> {"label", "parts": [(name, share), ...]},
    the ``top`` parts with the largest shares first. Empty parts for models that are not ``features``."""
    cell, linear = model.cell, model.head[-1]
    mean, std = cell.out_mean.cpu().numpy(), cell.out_std.cpu().numpy()
    z = (np.asarray(memory, np.float32) - mean) / std  # (out,)
    weight = linear.weight.detach().float().cpu().numpy()  # (C, out)
    logits = weight @ z + linear.bias.detach().float().cpu().numpy()
    win = int(np.argmax(logits))
    label = model.config.class_names[win]
    if model.config.encoder != "features":
        return {"label": label, "parts": []}
    terms = (weight[win] - weight.mean(0)) * z  # (out,): the winner's lead over the mean class, per unit
    per_input = np.bincount(cell.input_index(), weights=terms, minlength=cell.in_features)  # (F,)
    names = feature_names(model.config.features)
    totals: dict[str, float] = {}
    for name, value in zip(names, per_input, strict=True):
        totals[name] = totals.get(name, 0.0) + float(value)
    size = sum(abs(v) for v in totals.values()) or 1.0
    parts = sorted(((n, v / size) for n, v in totals.items()), key=lambda p: -abs(p[1]))[:top]
    return {"label": label, "parts": [(n, round(v, 4)) for n, v in parts]}
