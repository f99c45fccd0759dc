"""What the measurement tools share: their common flags, the RTSP test camera, ``dcrn run`` children and the
results they write.

Every tool runs from the repository root as a module, so that it imports ``tests.fixtures`` and this
module as they are::

    .venv/bin/python -m scripts.measure.soak --minutes 10

- flags: :func:`parser` (``--out``, default ``runs/NAME``), :func:`camera_flags`, :func:`run_flags`,
  :func:`time_flags`;
- the camera: :func:`require_camera` (why it cannot run here), :func:`camera` (an :class:`RtspServer`
  from the flags);
- children: :func:`dcrn_run` (the command line), :class:`Child` (its own process group, stopped with
  SIGINT as Ctrl-C stops ``dcrn run``, the whole group killed if it does not end; never left behind),
  :class:`JsonlTail` (the records of a running ``dcrn run``, whole lines only);
- results: :func:`write_json`, :func:`write_csv`, :func:`table` (:func:`checks_rows`), and what a summary
  records of the run (:func:`command_line`, :func:`utc`, :func:`load_average`, :func:`machine_info`);
- :func:`run`: a tool's ``main`` with SIGTERM turned into an exit that closes the camera and the children.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import csv
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import IO, NoReturn

from tests.fixtures.paths import REPO
from tests.fixtures.rtsp import RtspServer, unavailable_reason

RUNS = REPO / "runs"  # git-ignored: where the tools write unless told otherwise
RESULTS = REPO / "docs" / "results"  # the figures the guides in docs/ cite
EXIT_UNAVAILABLE = 2  # a tool that cannot run here (no RTSP test camera, too few cores)
STOP_GRACE_S = 60.0  # how long ``dcrn run`` may take to stop cleanly after SIGINT


# -- flags ------------------------------------------------------------------------------------------------


def parser(doc: str, out: str) -> argparse.ArgumentParser:
    """A parser described by the first line of the tool's docstring, with ``--out`` (default ``runs/OUT``)."""
    result = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    result.add_argument("--out", type=Path, default=RUNS / out, help=f"output folder (default runs/{out})")
    return result


def camera_flags(parser: argparse.ArgumentParser, *, width: int = 640, height: int = 480, fps: int = 25) -> None:
    """``--width``, ``--height``, ``--fps``: the RTSP test camera's picture."""
    parser.add_argument("--width", type=int, default=width, help=f"camera width (default {width})")
    parser.add_argument("--height", type=int, default=height, help=f"camera height (default {height})")
    parser.add_argument("--fps", type=int, default=fps, help=f"camera frame rate (default {fps})")


def run_flags(
    parser: argparse.ArgumentParser, *, model: str = "default", backend: bool = True, extra: bool = False
) -> None:
    """``--model`` and, when asked for, ``--backend`` and ``--extra`` (more ``dcrn run`` arguments)."""
    parser.add_argument("--model", default=model, help=f"shipped model name or checkpoint path (default {model})")
    if backend:
        parser.add_argument("--backend", default="auto", help="engine backend (default auto)")
    if extra:
        parser.add_argument("--extra", default="", help="more dcrn run arguments, as one string")


def time_flags(
    parser: argparse.ArgumentParser,
    *,
    minutes: float | None = None,
    seconds: float | None = None,
    warmup_s: float | None = None,
    warmup: str = "left out of the figures",
) -> None:
    """How long a tool measures (``--minutes`` or ``--seconds``) and ``--warmup-s`` before it does."""
    if minutes is not None:
        parser.add_argument("--minutes", type=float, default=minutes, help=f"how long (default {minutes:g})")
    if seconds is not None:
        parser.add_argument("--seconds", type=float, default=seconds, help=f"how long (default {seconds:g})")
    if warmup_s is not None:
        parser.add_argument("--warmup-s", type=float, default=warmup_s, help=f"{warmup} (default {warmup_s:g})")


# -- the camera -------------------------------------------------------------------------------------------


def require_camera(tool: str) -> bool:
    """True when the RTSP test camera can run here; otherwise says why on stderr (the tool then exits 2)."""
    reason = unavailable_reason()
    if reason:
        print(f"{tool}: {reason}", file=sys.stderr)
    return reason is None


def camera(args: argparse.Namespace, **options) -> RtspServer:
    """The RTSP test camera with the picture of :func:`camera_flags` (start it with ``with``)."""
    return RtspServer(width=args.width, height=args.height, fps=args.fps, **options)


# -- children ---------------------------------------------------------------------------------------------


def dcrn_run(
    sources: Sequence[str],
    *,
    model: str,
    backend: str | None = None,
    sink: str | None = None,
    stats_interval: float | None = None,
    duration: float | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``dcrn run`` command line (this Python, ``-m dcrn.app``) on ``sources``, one ``--source`` each."""
    command = [sys.executable, "-m", "dcrn.app", "run", "--model", model]
    if backend is not None:
        command += ["--backend", backend]
    for source in sources:
        command += ["--source", source]
    if duration is not None:
        command += ["--duration", f"{duration:g}"]
    if sink is not None:
        command += ["--sink", sink]
    if stats_interval is not None:
        command += ["--stats-interval", f"{stats_interval:g}"]
    return [*command, *extra]


_LIVE: set[Child] = set()  # children not stopped yet: stopped at exit whatever happened


class Child:
    """A subprocess in a process group of its own, run from the repository root.

    ``stop()`` ends it as Ctrl-C ends ``dcrn run`` (SIGINT, then up to ``grace_s`` for a clean exit), then
    kills whatever is left of its group (SIGKILL), so that nothing it started outlives the tool. ``with``
    stops it on the way out; so does the end of the tool, should a child not be stopped.
    ``stdout`` / ``stderr``: a file to write (``None``: discarded).
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        stdout: Path | None = None,
        stderr: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.command = list(command)
        self.killed = False  # True when it did not stop within the grace time of SIGINT
        self._files: list[IO[bytes]] = []
        out, err = self._open(stdout), self._open(stderr)
        try:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=None if env is None else dict(env),
                cwd=REPO,
                start_new_session=True,  # its own group: killed as one, and Ctrl-C reaches only the tool
            )
        except BaseException:
            self._close_files()
            raise
        _LIVE.add(self)

    def _open(self, path: Path | None) -> IO[bytes] | int:
        if path is None:
            return subprocess.DEVNULL
        file = path.open("wb")  # closed in stop()
        self._files.append(file)
        return file

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status; ``subprocess.TimeoutExpired`` when it runs past ``timeout``."""
        return self.proc.wait(timeout=timeout)

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGINT, ``grace_s`` for a clean exit, then SIGKILL to the whole group. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.killed = True
        self._kill_group()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self._close_files()
        _LIVE.discard(self)
        return self.proc.returncode

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is empty already
            os.killpg(self.proc.pid, signal.SIGKILL)

    def _close_files(self) -> None:
        for file in self._files:
            file.close()
        self._files = []

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_children() -> None:
    for child in list(_LIVE):
        child.stop(grace_s=5.0)


class JsonlTail:
    """The records of a JSONL file that another process is writing, read as it grows: whole lines only.

    ``keep(line)`` picks the lines worth parsing (the others are skipped unparsed).
    """

    def __init__(self, path: Path, keep: Callable[[bytes], bool] | None = None) -> None:
        self.path = path
        self.keep = keep
        self._offset = 0

    def read(self) -> list[dict]:
        """The records of the lines completed since the last call."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as file:
            file.seek(self._offset)
            data = file.read()
        end = data.rfind(b"\n") + 1  # a line not yet written whole waits for the next call
        self._offset += end
        lines = data[:end].splitlines()
        return [json.loads(line) for line in lines if line.strip() and (self.keep is None or self.keep(line))]


# -- results ----------------------------------------------------------------------------------------------


def write_json(path: Path, data: object) -> Path:
    """``data`` as indented JSON, its folder made first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_csv(path: Path, rows: Iterable[Mapping[str, object]], fields: Sequence[str]) -> Path:
    """One row per mapping, columns ``fields``, with a header line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)
    return path


def table(rows: Iterable[tuple[str, object]], title: str | None = None) -> str:
    """Two aligned columns, name and value, under an optional title line."""
    rows = list(rows)
    width = max((len(name) for name, _ in rows), default=0)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join([title, *lines] if title else lines)


def checks_rows(checks: Mapping[str, bool]) -> list[tuple[str, str]]:
    """A summary's checks as table rows: ``ok`` or ``FAILED``."""
    return [(name, "ok" if passed else "FAILED") for name, passed in checks.items()]


def command_line(tool: str, argv: Sequence[str] | None = None) -> str:
    """How the tool was run, for its summary: ``python -m scripts.measure.TOOL ARGS``."""
    return " ".join(["python -m scripts.measure." + tool, *(sys.argv[1:] if argv is None else argv)])


def utc(t: float | None = None) -> str:
    """``t`` (default: now) as an ISO 8601 UTC time to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def load_average() -> list[float]:
    """The machine's load average over 1, 5 and 15 minutes: other load changes every figure."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_info(packages: Sequence[str] = ("torch", "onnxruntime", "psutil")) -> dict:
    """The machine and software a run measured: CPU, memory, platform, package versions, the commit."""
    import psutil

    model = platform.processor()
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), model)
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no").splitlines()
    changed = [line[3:].split(" -> ")[-1] for line in status if line.strip()]  # "XY path", "R  old -> new"
    return {
        "host": platform.node(),
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "git_commit": commit.strip(),
        "git_changed_files": changed,
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


# -- running a tool ---------------------------------------------------------------------------------------


def run(main: Callable[[], int]) -> NoReturn:
    """Exits with ``main()``'s status; SIGTERM exits too, through every ``with`` and ``finally`` on the way,
    so the camera and the children are stopped as on Ctrl-C."""
    signal.signal(signal.SIGTERM, _terminated)
    sys.exit(main())


def _terminated(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)
