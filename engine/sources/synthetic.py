"""``synthetic:``, the built-in procedural action stream with ground-truth labels."""

from __future__ import annotations

from urllib.parse import parse_qsl

import numpy as np

from dcrn.engine.errors import BadSourceURI
from dcrn.engine.redact import redact
from dcrn.engine.sources.base import Read, Source, SourceOptions

SYNTHETIC_DEFAULTS = {"seed": 0, "fps": 30.0, "width": 320, "height": 240}
SYNTHETIC_LIMITS = {"fps": 1000.0, "width": 4096, "height": 4096}  # largest value of each option


class SyntheticSource(Source):
    """The built-in procedural action stream (``dcrn.models.synth``), with ground-truth labels.

    Live (it never ends); paced at ``fps`` unless ``options.pace`` is off; pts = frame index / fps.
    """

    paced = True

    def __init__(
        self,
        *,
        seed: int = 0,
        fps: float = 30.0,
        width: int = 320,
        height: int = 240,
        name: str | None = None,
        options: SourceOptions,
        uri: str | None = None,
    ) -> None:
        self.seed, self.width, self.height = seed, width, height
        self.fps = float(fps)
        super().__init__(
            uri or f"synthetic:?seed={seed}&fps={fps:g}&width={width}&height={height}", name or "synthetic", options
        )
        self._stream = None
        self._index = 0
        self._start()

    def _open(self) -> None:
        if self._stream is not None:
            return  # a reopen continues the same stream: nothing was lost
        from dcrn.models.synth import SyntheticActionStream

        self._stream = SyntheticActionStream(seed=self.seed, fps=self.fps, size=(self.height, self.width))
        self.labels = tuple(self._stream.labels)

    def _read(self) -> Read:
        image, label = self._stream.read()
        pts = self._index / self.fps
        self._index += 1
        return np.ascontiguousarray(image, dtype=np.uint8), pts, None if label is None else int(label)

    def _close(self) -> None:
        pass  # the procedural stream holds nothing to release; reopen continues it


def parse_synthetic(uri: str, name: str | None, options: SourceOptions) -> SyntheticSource:
    query = uri[len("synthetic:") :]
    query = query[1:] if query.startswith("?") else query
    values: dict[str, float | int] = dict(SYNTHETIC_DEFAULTS)
    for key, raw in parse_qsl(query, keep_blank_values=True):
        if key not in SYNTHETIC_DEFAULTS:
            known = ", ".join(SYNTHETIC_DEFAULTS)
            raise BadSourceURI(f"bad source URI {redact(uri)!r}: unknown option {key!r} (known: {known})")
        try:
            value = float(raw) if key == "fps" else int(raw)
        except ValueError:
            raise BadSourceURI(f"bad source URI {redact(uri)!r}: {key} must be a number, got {raw!r}") from None
        if key != "seed" and not 0 < value <= SYNTHETIC_LIMITS[key]:  # also refuses nan and inf
            raise BadSourceURI(
                f"bad source URI {redact(uri)!r}: {key} must be positive and at most {SYNTHETIC_LIMITS[key]:g}, "
                f"got {raw!r}"
            )
        values[key] = value
    return SyntheticSource(name=name, options=options, **values)
