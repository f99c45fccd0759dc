"""Streaming errors: branches of the project's one error tree (see dcrn.models.errors)."""

from __future__ import annotations

from dcrn.models.errors import DcrnError


class SourceError(DcrnError, RuntimeError):
    """A source URI cannot be used (root of the source errors)."""


class SourceNotFound(SourceError, FileNotFoundError):
    """A video file or camera device does not exist."""


class SourceUnreadable(SourceError, ValueError):
    """A file exists but cannot be decoded as video."""


class SourceUnreachable(SourceError, ConnectionError):
    """A network stream did not answer within the open timeout."""


class SourceStalled(SourceError, TimeoutError):
    """An open live stream delivered no frame for the stall time (frozen camera, stalled network)."""


class BadSourceURI(SourceError, ValueError):
    """A source URI is malformed or uses an unsupported scheme."""


class BackendUnavailable(DcrnError, RuntimeError):
    """A backend or device was asked for that this machine cannot provide."""


class SinkError(DcrnError, OSError):
    """A sink spec is malformed or its file cannot be written."""


class ClusterError(DcrnError, RuntimeError):
    """``--cluster``: the cluster cannot be reached or joined, has no node for a stream, a stream failed to
    start there, or the cluster was lost."""
