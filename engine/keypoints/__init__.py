"""Keypoint encoders: hands and bodies as landmarks, one step per frame with the tracked regions as state.

MediaPipe's Apache-2.0 palm / hand and pose graphs (shipped in ``models/shipped/keypoints/``, see
:mod:`~dcrn.engine.keypoints.model_files`) run through OpenVINO (:mod:`~dcrn.engine.keypoints.runtime`);
the detectors' anchors and suppression (:mod:`~dcrn.engine.keypoints.anchors`) and the regions the
landmark models read (:mod:`~dcrn.engine.keypoints.roi`) follow MediaPipe's published graphs. The feature
math that training shares lives in :mod:`dcrn.models.keypoint_features`. Measurements: docs/KEYPOINTS.md.

    from dcrn.engine.keypoints import BodyEncoder, HandsEncoder, TrackState
    body, state = BodyEncoder(), TrackState()
    result, state = body.step(frame_rgb, state)   # the detector runs only when tracking is lost
"""

from __future__ import annotations

import importlib

# Names are imported on first use, so ``python -m dcrn.engine.keypoints.model_files`` (a set-up step) needs
# neither OpenVINO nor torch.
_EXPORTS = {
    "BodyConfig": "body",
    "BodyEncoder": "body",
    "BodyResult": "body",
    "Person": "body",
    "Hand": "hands",
    "HandsConfig": "hands",
    "HandsEncoder": "hands",
    "HandsResult": "hands",
    "KeypointGraphCorrupt": "model_files",
    "KeypointGraphMissing": "model_files",
    "Roi": "roi",
    "RuntimeOptions": "runtime",
    "Track": "tracking",
    "TrackState": "tracking",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
