"""A one-line progress bar on stderr: drawn in place on a terminal, a log line every 30 s otherwise."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("dcrn.progress")


class Progress:
    """``bar.update(loss=..., acc=...)`` once per step; ``close()`` ends the line."""

    def __init__(self, total: int, title: str, enabled: bool = True, stream=None) -> None:
        self.total = max(total, 1)
        self.title = title
        self.stream = stream or sys.stderr
        self.enabled = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.count = 0
        self.log_every_s = 30.0 if enabled and not self.enabled else 0.0
        self._drawn = time.monotonic()

    def update(self, **values: float) -> None:
        self.count += 1
        now = time.monotonic()
        shown = " ".join(f"{k} {v:.3f}" if v < 100 else f"{k} {v:.0f}" for k, v in values.items())
        if self.log_every_s and now - self._drawn >= self.log_every_s:
            self._drawn = now
            log.info("%s: step %d/%d %s", self.title, self.count, self.total, shown)
        if not self.enabled or (now - self._drawn < 0.2 and self.count < self.total):
            return
        self._drawn = now
        width = 24
        filled = round(width * self.count / self.total)
        line = f"\r{self.title} [{'#' * filled}{'.' * (width - filled)}] {self.count}/{self.total} {shown}"
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.count:
            self.stream.write("\n")
            self.stream.flush()
