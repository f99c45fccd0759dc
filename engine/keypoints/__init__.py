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


def clip_reader(threads: int = 1):
    """Teaching's keypoint reader (:class:`~dcrn.engine.keypoints.front.ClipReader`), or None with a logged
    reason where the keypoint graphs cannot run here (OpenVINO not installed, a graph missing or damaged):
    teaching then tries the picture's flow alone."""
    import logging

    try:
        from dcrn.engine.keypoints.front import ClipReader
        from dcrn.engine.keypoints.runtime import RuntimeOptions

        return ClipReader(RuntimeOptions(threads=max(1, threads)))
    except ImportError as exc:
        reason = f"{exc.name or exc} is not installed (pip install 'dcrn-live[openvino]')"
    except (OSError, ValueError) as exc:  # KeypointGraphMissing / KeypointGraphCorrupt
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    logging.getLogger(__name__).warning("hands and bodies are not tried: %s", reason)
    return None


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
