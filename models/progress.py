"""A one-line progress bar on stderr: drawn in place on a terminal, silent otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    """``bar.update(loss=..., acc=...)`` once per step; ``close()`` ends the line."""

    def __init__(self, total: int, title: str, enabled: bool = True, stream=None) -> None:
        self.total = max(total, 1)
        self.title = title
        self.stream = stream or sys.stderr
        self.enabled = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.count = 0
        self._drawn = 0.0

    def update(self, **values: float) -> None:
        self.count += 1
        now = time.monotonic()
        if not self.enabled or (now - self._drawn < 0.2 and self.count < self.total):
            return
        self._drawn = now
        width = 24
        filled = round(width * self.count / self.total)
        shown = " ".join(
            f"{k} {v:.3f}" if isinstance(v, float) and v < 100 else f"{k} {v:.0f}" for k, v in values.items()
        )
        line = f"\r{self.title} [{'#' * filled}{'.' * (width - filled)}] {self.count}/{self.total} {shown}"
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.count:
            self.stream.write("\n")
            self.stream.flush()
