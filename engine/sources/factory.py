"""One factory, :func:`open_source`, turns a URI into an open source of the right kind.

source = open_source("rtsp://admin:pw@10.0.0.5/stream1", options=SourceOptions(timeout_s=5))
image, pts, label = source.read()          # (H, W, 3) uint8 RGB, seconds, ground truth or None
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit

from dcrn.engine.errors import BadSourceURI
from dcrn.engine.redact import redact
from dcrn.engine.sources.base import STREAM_SCHEMES, Source, SourceOptions, safe_name
from dcrn.engine.sources.camera import CameraSource
from dcrn.engine.sources.file import FileSource
from dcrn.engine.sources.synthetic import parse_synthetic


def open_source(uri: str | int, *, name: str | None = None, options: SourceOptions | None = None) -> Source:
    """Open ``uri`` and return the matching source, validated (its first frame decoded)."""
    options = options or SourceOptions()
    if isinstance(uri, bool) or not isinstance(uri, (str, int, os.PathLike)):
        raise BadSourceURI(f"bad source URI {uri!r}: expected a string, camera index or path")
    if isinstance(uri, int):
        if uri < 0:
            raise BadSourceURI(f"bad source URI {uri}: a camera index cannot be negative")
        return CameraSource(uri, name=name, options=options)
    if isinstance(uri, os.PathLike):
        return FileSource(uri, name=name, options=options)
    text = uri.strip()
    if not text:
        raise BadSourceURI("bad source URI '': empty")
    if text.isdigit():
        return CameraSource(int(text), name=name, options=options)
    match = re.fullmatch(r"/dev/video(\d+)", text)
    if match:
        return CameraSource(int(match[1]), name=name, options=options)
    if text.startswith("synthetic:"):
        return parse_synthetic(text, name, options)
    try:
        scheme = urlsplit(text).scheme.lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", text) else ""
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket, "rtsp://[::1"
        raise BadSourceURI(f"bad source URI {redact(text)!r}: {exc}") from None
    if len(scheme) == 1:  # a Windows drive letter, "C:\\videos\\a.mp4"
        scheme = ""
    if scheme in STREAM_SCHEMES:
        from dcrn.engine.sources.credentials import apply_credentials
        from dcrn.engine.sources.stream import StreamSource

        # A URL without a password gets the one from $DCRN_CREDENTIALS, when that names a file.
        return StreamSource(apply_credentials([text])[0], name=name, options=options)
    if scheme == "file":
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise BadSourceURI(f"bad source URI {redact(text)!r}: file URLs must be local")
        return FileSource(unquote(parts.path), name=name, options=options)
    if scheme and not Path(text).exists():  # "a:b.mp4" that exists is a file name with a colon
        supported = ", ".join(f"{s}://" for s in STREAM_SCHEMES)
        raise BadSourceURI(
            f"bad source URI {redact(text)!r}: unsupported scheme {scheme!r} "
            f"(use a camera index, a file path, {supported} or synthetic:)"
        )
    return FileSource(text, name=name, options=options)


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``, ... when it is taken: two sources with the same default name."""
    return name if name not in taken else next(f"{name}-{k}" for k in range(2, 10_000) if f"{name}-{k}" not in taken)


def quiet_native_logs() -> None:
    """OpenCV and FFmpeg print warnings straight to stderr; errors reach the user as one line anyway."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET


def source_name(uri: str | int) -> str:
    """The stream name :func:`open_source` gives ``uri`` by default, found without opening it."""
    text = str(uri).strip()
    match = re.fullmatch(r"(?:/dev/video)?(\d+)", text)
    if match:
        return f"cam{int(match[1])}"
    if text.startswith("synthetic:"):
        return "synthetic"
    try:
        scheme = urlsplit(text).scheme.lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", text) else ""
    except ValueError:
        scheme = ""
    if scheme in STREAM_SCHEMES:
        from dcrn.engine.sources.stream import default_stream_name

        return default_stream_name(text)
    if scheme == "file":
        text = unquote(urlsplit(text).path)
    return safe_name(Path(text).stem) or "file"


def open_sources(
    uris: Sequence[str | int], *, names: Sequence[str | None] | None = None, options: SourceOptions | None = None
) -> list[Source]:
    """Open several sources at once, each on its own thread; returns them in the order of ``uris``.

    N cameras cost one open time, not N: one that does not answer delays start-up by one open timeout,
    and a live stream opened first does not pile up seconds of frames in its socket while the others
    open. When any fails, the others are closed and the first failure (in order) is raised.
    """
    names = list(names) if names is not None else [None] * len(uris)
    if len(names) != len(uris):
        raise ValueError(f"names must give one name per source, got {len(names)} for {len(uris)}")
    if len(uris) == 1:
        return [open_source(uris[0], name=names[0], options=options)]
    with ThreadPoolExecutor(max_workers=min(len(uris), 16), thread_name_prefix="open-source") as pool:
        futures = [
            pool.submit(open_source, uri, name=name, options=options) for uri, name in zip(uris, names, strict=True)
        ]
    opened: list[Source] = []
    failure: BaseException | None = None
    for future in futures:
        try:
            opened.append(future.result())
        except BaseException as exc:
            failure = failure or exc
    if failure is not None:
        for source in opened:
            source.close()
        raise failure
    return opened
