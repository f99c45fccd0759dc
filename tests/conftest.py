"""Shared fixtures and the skip policy. ``../shared`` (beside the repository) holds real footage and offline
weights.

Skip policy: with the ``CI`` environment variable set (to anything but ``0``/``false``/empty), a test may
skip only because this machine lacks (or has) a GPU, or has no camera device. Any other skip (a missing
Debian package, Python module, data folder...) fails the run with its reason: a suite that can skip its
most important tests and still pass proves nothing on a new machine. The summary lists every skip the
policy accepted.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from tests.fixtures.paths import SHARED

# Reasons a skip may give under CI: hardware this machine does not (or does) have.
ACCEPTED_CI_SKIP = re.compile(r"\b(GPU|CUDA)\b|camera device", re.IGNORECASE)


def has_cuda() -> bool:
    return torch.cuda.is_available()


def ci_enabled() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_reason(report) -> str:
    """The reason a skipped test or module gave (pytest keeps it as ``(path, line, "Skipped: reason")``)."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def skip_accepted(reason: str) -> bool:
    return bool(ACCEPTED_CI_SKIP.search(reason))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI, a test that skips for any reason but missing hardware fails, and says why."""
    outcome = yield
    report = outcome.get_result()
    if not (ci_enabled() and report.skipped and not hasattr(report, "wasxfail")):
        return
    reason = skip_reason(report)
    if not skip_accepted(reason):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which allows skips only for a missing GPU or camera device: {reason}"


_refused_collection: list[str] = []  # "node id: reason" of modules skipped at collection, refused under CI


def pytest_collectreport(report):
    """A whole module skipped at collection (``importorskip`` at top level) is held to the same policy."""
    if ci_enabled() and report.skipped and not skip_accepted(skip_reason(report)):
        report.refused_under_ci = True
        _refused_collection.append(f"{report.nodeid}: {skip_reason(report)}")


def pytest_sessionfinish(session, exitstatus):
    if _refused_collection and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    """List the skips this run accepted (and, under CI, the module skips it refused)."""
    accepted: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        if hasattr(report, "wasxfail") or getattr(report, "refused_under_ci", False):
            continue
        reason = skip_reason(report)
        accepted[reason] = accepted.get(reason, 0) + 1
    if accepted:
        policy = "CI: missing GPU or camera device only" if ci_enabled() else "CI not set: any reason"
        terminalreporter.section(f"skips accepted ({policy})")
        for reason, count in sorted(accepted.items()):
            terminalreporter.line(f"{count:4d} x {reason}")
    if _refused_collection:
        terminalreporter.section("skips refused under CI (the run fails)", red=True)
        for line in _refused_collection:
            terminalreporter.line(line)


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

    Yields a ``tests.fixtures.rtsp.RtspServer``: ``.url``, ``.kill()`` (like a power cut), ``.restart()``
    (same port, same URL), ``.pause()`` / ``.resume()``. Skips when gst-rtsp-server is not installed;
    the server is always stopped afterwards.
    """
    from tests.fixtures.rtsp import RtspServer, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = RtspServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
