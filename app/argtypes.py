"""Argument types shared by every command: numbers that must be finite and in range, and outputs that
must be writable, each checked while the command line is parsed -- before any model loads or work starts.

    parser.add_argument("--duration", type=seconds)                 # nan, inf, 0, -1, 1e99: refused
    parser.add_argument("--threads", type=thread_count)             # 0 to 1024
    parser.add_argument("--alpha", type=fraction(low_open=True))     # (0, 1]
    parser.add_argument("--out", type=writable_file)                # its folder must be writable

A refused value ends the command with one line on stderr (:class:`Parser`) and exit code 2. This module
imports neither torch nor the engine, so that ``dcrn --help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

MAX_SECONDS = 86_400.0 * 365  # a year: larger durations and timeouts are typing mistakes, not plans
MAX_COUNT = 10**9  # frames, clips, steps, ...


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line: ``dcrn run: error: argument --x: ...``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def bounded(
    kind: type,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    name: str = "",
    expected: str = "",
) -> Callable[[str], float | int]:
    """An argparse type: a finite ``kind`` (int or float) in [low, high] (``low_open``: (low, high]);
    ``expected`` says what is wanted in the error (default: the interval)."""

    def parse(text: str) -> float | int:
        value = _number(text, kind)
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and value > high
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"expected {describe()}, got {text!r}")
        return value

    def describe() -> str:
        if expected:
            return expected
        what = "a whole number" if kind is int else "a number"
        if low is not None and high is not None:
            return f"{what} in {'(' if low_open else '['}{low:g}, {high:g}]"
        if low is not None:
            return f"{what} {'>' if low_open else '>='} {low:g}"
        return f"{what} <= {high:g}" if high is not None else f"finite {what}"

    parse.__name__ = name or describe().replace(" ", "_")
    return parse


def fraction(*, low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """A probability-like number in [0, 1] (``low_open``: > 0; ``high_open``: < 1)."""

    def parse(text: str) -> float:
        value = _number(text, float)
        if (value <= 0 if low_open else value < 0) or (value >= 1 if high_open else value > 1):
            interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}")
        return value

    parse.__name__ = "fraction"
    return parse


finite_float = bounded(float, name="finite_float")
seed = bounded(int, 0, 2**32 - 1, name="seed", expected="a whole number from 0 to 2**32 - 1")  # random seeds
positive_float = bounded(float, 0.0, low_open=True, name="positive_float")
non_negative_float = bounded(float, 0.0, name="non_negative_float")
positive_int = bounded(int, 1, MAX_COUNT, name="positive_int", expected="a whole number >= 1 (at most 10**9)")
non_negative_int = bounded(int, 0, MAX_COUNT, name="non_negative_int", expected="a whole number >= 0 (at most 10**9)")
probability = fraction()
thread_count = bounded(int, 0, 1024, name="thread_count")  # 0: the libraries' default
frame_rate = bounded(float, 0.0, 1000.0, low_open=True, name="frame_rate")
# durations and timeouts: at most a year
seconds = bounded(float, 0.0, MAX_SECONDS, low_open=True, name="seconds", expected="seconds > 0 (at most a year)")
non_negative_seconds = bounded(
    float, 0.0, MAX_SECONDS, name="non_negative_seconds", expected="seconds >= 0 (at most a year)"
)


def check_writable(path: str | os.PathLike, *, folder: bool = False) -> Path:
    """``path`` when this process can write it, else ``ValueError`` naming what is in the way.

    ``folder``: ``path`` is a folder to write files into, else a file to create or replace (atomically:
    a temporary file in the same folder, then a rename, so its folder must be writable too). The nearest
    folder on the way that exists is tried for real (a temporary file, removed at once): permission bits
    say nothing for root, a read-only mount or a network file system. No folder is created here.
    """
    path = Path(path).expanduser()
    if path.exists() and folder != path.is_dir():
        raise ValueError(f"cannot write {path}: it is {'a file, not a folder' if folder else 'a folder'}")
    if path.is_file() and not os.access(path, os.W_OK):
        raise ValueError(f"cannot write {path}: permission denied")
    existing = path if folder and path.exists() else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot write {path}: {existing} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".dcrn-write-check-", dir=existing)
    except OSError as exc:
        raise ValueError(f"cannot write {path}: the folder {existing} is not writable ({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)
    return path


def writable_file(text: str) -> Path:
    """An argparse type: an output file this process can create or replace (its folders may not exist yet)."""
    try:
        return check_writable(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def writable_folder(text: str) -> Path:
    """An argparse type: an output folder this process can create or write into."""
    try:
        return check_writable(text, folder=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def host_port(text: str) -> tuple[str, int]:
    """An argparse type: ``[HOST:]PORT`` (an IPv6 host in brackets) -> (host, port); host default 127.0.0.1."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected [HOST:]PORT with a port from 1 to 65535, got {text!r}")
    if not host or not all(c.isalnum() or c in ".-:" for c in host) or len(host) > 253:
        raise argparse.ArgumentTypeError(f"expected [HOST:]PORT with a host name or address, got {text!r}")
    return host, int(port)
