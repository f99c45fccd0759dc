"""``cli``: the ``dcrn`` command run in this process, its exit code and output; ``dcrn_process``: as a process."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from dataclasses import dataclass

import pytest


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.strip().splitlines() if line]

    def refused(self, command: str, *phrases: str) -> None:
        """Exit 2 with exactly one line on stderr, ``dcrn COMMAND: error: ...``, holding every phrase."""
        assert self.code == 2, (self.code, self.err)
        assert "Traceback" not in self.err
        lines = self.error_lines
        assert len(lines) == 1 and lines[0].startswith(f"dcrn {command}: error: "), self.err
        for phrase in phrases:
            assert phrase in lines[0], (phrase, lines[0])


@pytest.fixture
def cli(capsys):
    """Run ``dcrn ARGS`` in this process (``--log-level ERROR``) -> :class:`Result`."""

    def run(*args: str) -> Result:
        from dcrn.app.cli import main

        try:
            code = main(["--log-level", "ERROR", *args])
        except SystemExit as exc:  # usage errors end in the parser
            code = exc.code
        captured = capsys.readouterr()
        return Result(int(code or 0), captured.out, captured.err)

    return run


@pytest.fixture
def dcrn_process():
    """Run ``dcrn ARGS`` as a process (``python -m dcrn.app``) with a time limit -> :class:`Result`."""

    def run(
        *args: str, timeout: float = 60, env: dict | None = None, cwd=None, memory_cap: int | None = None
    ) -> Result:
        """``memory_cap``: bytes of address space the process may take (a hostile input that asks for more
        fails that process, not the machine); it also runs OpenMP and BLAS on one thread."""
        env = {**os.environ, **(env or {})}
        cap = None
        if memory_cap:
            env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")

            def cap() -> None:
                resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))

        done = subprocess.run(
            [sys.executable, "-m", "dcrn.app", "--log-level", "ERROR", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
            preexec_fn=cap,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    return run
