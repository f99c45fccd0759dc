"""``dcrn run --config``: the site config merged with the command line, and several models in one process.

Flags given on the command line win over the file: ``--source`` replaces the file's cameras, ``--sink``
its sinks, ``--model`` every camera's model, ``--class-threshold`` a class's threshold on every camera,
``--backend`` / ``--device`` / ``--threads`` / ``--people`` / ``--evidence*`` theirs. Cameras that differ in
model, thresholds, evidence on / off or people followed run in one :class:`~dcrn.engine.pipeline.Pipeline` each (a
:class:`PipelineGroup`, one thread per pipeline), writing to the same sinks (:class:`SharedSink`: opened
by the first pipeline, closed by the last).
"""

from __future__ import annotations

import argparse
import logging
import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from dcrn.app.site_config import SiteConfig
from dcrn.engine.sinks.base import Sink

if TYPE_CHECKING:
    from dcrn.engine.pipeline import Pipeline, PipelineConfig

log = logging.getLogger(__name__)

# flags whose default ``dcrn run`` leaves as None, so that a value from the file can take their place
FILE_DEFAULTS = {"model": "default", "backend": "auto", "device": "auto", "threads": 1, "people": 1}


def apply_site_defaults(args: argparse.Namespace, site: SiteConfig | None) -> None:
    """Fill what the command line left out from the file, then the usual defaults (in place)."""
    args.model_given = args.model is not None
    args.people_given = args.people is not None
    if site is not None:
        if args.source:
            log.info("--source given: the cameras of %s are not used", site.path)
        else:
            args.source = [cam.source for cam in site.cameras]
        if not args.sink:
            args.sink = list(site.sinks) or None
        for key in ("model", "backend", "device", "threads", "people"):
            if getattr(args, key) is None:
                setattr(args, key, getattr(site, key))
        ev = site.evidence
        args.evidence = args.evidence if args.evidence is not None else ev.dir
        args.evidence_pre = args.evidence_pre if args.evidence_pre is not None else ev.pre_s
        args.evidence_post = args.evidence_post if args.evidence_post is not None else ev.post_s
    for key, default in FILE_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, default)


def evidence_config(args: argparse.Namespace, site: SiteConfig | None):
    """The EvidenceConfig of the flags and the file (the engine's defaults for what neither gives)."""
    from dcrn.engine.evidence.config import EvidenceConfig

    values: dict[str, float] = {}
    if args.evidence_pre is not None:
        values["pre_s"] = args.evidence_pre
    if args.evidence_post is not None:
        values["post_s"] = args.evidence_post
    if site is not None:
        for key in ("max_mb", "max_age_days"):
            if getattr(site.evidence, key) is not None:
                values[key] = getattr(site.evidence, key)
    return EvidenceConfig(**values)


def site_groups(
    config: PipelineConfig, site: SiteConfig | None, args: argparse.Namespace, cli_thresholds: dict[str, float]
) -> list[PipelineConfig]:
    """One PipelineConfig per group of the file's cameras that share model, thresholds, evidence on / off and
    people followed.

    ``config`` is the run's config over every camera's source (in the file's order, credentials applied).
    Without a file, or when ``--source`` replaced its cameras: ``[config]``.
    """
    from dcrn.engine.frames import Roi

    if site is None or len(site.cameras) != len(config.sources) or args.source_given:
        return [config]
    groups: dict[tuple, list[int]] = {}
    for index, cam in enumerate(site.cameras):
        model = config.model if args.model_given else (cam.model or site.model or config.model)
        thresholds = {**cam.thresholds, **cli_thresholds}
        people = config.people if args.people_given else (cam.people or site.people or config.people)
        key = (model, tuple(sorted(thresholds.items())), cam.evidence, people)
        groups.setdefault(key, []).append(index)
    configs = []
    for (model, thresholds, evidence_on, people), members in groups.items():
        cams = [site.cameras[i] for i in members]
        rois = [None if c.roi is None else Roi(*c.roi, fractions=not c.roi_pixels) for c in cams]
        configs.append(
            replace(
                config,
                sources=[config.sources[i] for i in members],
                names=[c.name for c in cams],
                rois=rois if any(rois) else None,
                model=model,
                postprocess=replace(config.postprocess, class_thresholds=dict(thresholds)),
                evidence_dir=config.evidence_dir if evidence_on else None,
                people=people,
            )
        )
    return configs


class SharedSink(Sink):
    """One sink written by ``users`` pipelines: opened by the first ``open``, closed by the last ``close``."""

    def __init__(self, inner: Sink, users: int) -> None:
        super().__init__(include_logits=True)  # the inner sink strips logits itself
        self.inner = inner
        self.spec = inner.spec
        self.include_logits = getattr(inner, "include_logits", False)
        self.users = users
        self._opened = False
        self._closes = 0
        self._share_lock = threading.Lock()

    def open(self) -> SharedSink:
        with self._share_lock:
            if not self._opened:
                self.inner.open()
                self._opened = True
        return self

    def close(self) -> None:
        with self._share_lock:
            self._closes += 1
            last = self._closes >= self.users
        if last:
            self.inner.close()

    def write(self, record: dict) -> None:
        self.inner.write(record)

    def flush(self) -> None:
        self.inner.flush()

    def __repr__(self) -> str:
        return repr(self.inner)


class PipelineGroup:
    """Several pipelines run together, one thread each; ``stop`` stops all, the first failure stops all."""

    def __init__(self, pipelines: list[Pipeline]) -> None:
        self.pipelines = pipelines
        self.failures: list[BaseException] = []

    def stop(self) -> None:
        for pipeline in self.pipelines:
            pipeline.stop()

    def run(self) -> None:
        def target(pipeline: Pipeline) -> None:
            try:
                pipeline.run()
            except BaseException as exc:
                self.failures.append(exc)
                self.stop()

        threads = [
            threading.Thread(target=target, args=(p,), name=f"dcrn-pipeline-{i}") for i, p in enumerate(self.pipelines)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.failures:
            raise self.failures[0]
