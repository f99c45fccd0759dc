"""Several people in one stream: each person followed gets their own recurrent state, predictions and events.

With ``PipelineConfig(people=N)`` and a model taught on the body, the keypoint front end follows up to N people
per stream and gives one vector per person (:class:`~dcrn.engine.keypoints.front.FrontResult` ``rows``). Each
person is a row of the batched step with its own state slot and postprocessor, so "who fell" is answered: every
prediction and event of that row carries ``"person": id`` (the tracker's id, the same while the person stays
followed). A person no longer found ends (a running action ends with them) and their state is dropped; while
nobody is in view the stream's own row runs, as with one person, and its records carry no ``person``.

BlazePose is a single-person model at heart: its detector sees people who are large in the picture, and two
people close together merge into one until they separate (docs/KEYPOINTS.md measures what it finds).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dcrn.engine.frames import Frame
from dcrn.engine.postprocess import PostprocessConfig, StreamPostprocessor
from dcrn.engine.slots import StateSlots


def slot_name(stream: str, person: int | None) -> str:
    """The state slot of one row: the stream's own, or the person's (a name no stream can have)."""
    return stream if person is None else f"{stream}\x1fperson {person}"


class PeopleRows:
    """The people of every stream: their postprocessors, and their state slots in ``StateSlots``."""

    def __init__(self, labels: tuple[str, ...], config: PostprocessConfig) -> None:
        self.labels, self.config = labels, config
        self._posts: dict[tuple[str, int], StreamPostprocessor] = {}

    def names(
        self, slots: StateSlots, streams: Sequence[str], rows: Sequence[tuple[int, int | None]], posts: dict
    ) -> tuple[list[str], list[dict]]:
        """Slot names of ``rows`` ((index into ``streams``, person id or None) each), and the records of people
        who are gone from these streams' frames (their running action ends). A stream whose frame has people
        ends the action of its own (nobody's) row: ``posts`` maps stream names to their postprocessors."""
        ended: list[dict] = []
        present = {(streams[i], p) for i, p in rows if p is not None}
        for key in [k for k in self._posts if k[0] in set(streams) and k not in present]:
            ended += self._end(slots, key)
        for stream in {s for s, _ in present}:
            ended += posts[stream].reset() if posts[stream].active is not None else []
        names = []
        for i, person in rows:
            key = (streams[i], person)
            if person is not None and key not in self._posts:
                self._posts[key] = StreamPostprocessor(self.labels, self.config)
                slots.add(slot_name(*key))
            names.append(slot_name(*key))
        return names, ended

    def update(
        self, post: StreamPostprocessor, person: int | None, logits: torch.Tensor, frame: Frame, include_logits: bool
    ) -> tuple[dict, list[dict]]:
        """The row's prediction and events: the stream's own ``post`` for nobody, else the person's (tagged)."""
        if person is None:
            return post.update(logits, frame, include_logits=include_logits)
        prediction, events = self._posts[(frame.stream, person)].update(logits, frame, include_logits=include_logits)
        for record in (prediction, *events):
            record["person"] = person
        return prediction, events

    def drop(self, slots: StateSlots, stream: str) -> list[dict]:
        """Every person of ``stream`` ends (a discontinuity, the stream's end, another model)."""
        return [record for key in [k for k in self._posts if k[0] == stream] for record in self._end(slots, key)]

    def _end(self, slots: StateSlots, key: tuple[str, int]) -> list[dict]:
        records = self._posts.pop(key).reset()
        slots.remove(slot_name(*key))
        for record in records:
            record["person"] = key[1]
        return records
