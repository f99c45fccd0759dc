"""Shared fixtures. ``../shared`` (beside the repository) holds real footage and offline weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def has_cuda() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip cleanly on machines without CUDA."""
    if has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not present")
    return SHARED


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture
def rtsp_server():
    """A live RTSP camera on a free 127.0.0.1 port (GStreamer, scripts/rtsp_server.py).

    Yields a ``tests.rtsp_fixture.RtspServer``: ``.url``, ``.kill()`` (like a power cut), ``.restart()``
    (same port, same URL), ``.pause()`` / ``.resume()``. Skips when gst-rtsp-server is not installed;
    the server is always stopped afterwards.
    """
    from tests.rtsp_fixture import RtspServer, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = RtspServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
