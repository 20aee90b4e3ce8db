"""Every model a process runs, loaded once and shared by the stations that run it.

A model is keyed by its configuration (and the frontend's): stations
configured alike share one loaded copy and, per window length, one
:class:`~listener.pipeline.batcher.SharedBatcher`, in which each station's
lane of that model queues its windows; each station keeps its own plan
(windows, hop, thresholds). A ResNet primary is loaded as a
:class:`~listener.model.scorer.Scorer` (one score per window); every other
model through its backend (``listener.model.backends``). Loading runs in a
worker thread, so probes keep answering while a large model loads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from listener.config import Config
from listener.model.backends.base import ModelBackend, ModelPlan
from listener.model.levels import trained_levels_dbfs
from listener.pipeline.batcher import Clock, SharedBatcher
from listener.pipeline.lane import Tagged
from listener.runtime.builder import LoadedModel

log = logging.getLogger(__name__)


class Preparer(Protocol):
    """The frontend's waveform step: windows of one rate and length -> model-rate mono.

    Row ``i`` is exactly what window ``i`` alone gives (:meth:`Frontend.prepare_batch`).
    """

    def prepare_batch(self, windows: Sequence[np.ndarray], sample_rate: int) -> np.ndarray: ...


class WindowScorer(Protocol):
    """A primary model that gives one score per window (:class:`listener.model.scorer.Scorer`,
    or a fake that reacts to known content)."""

    @property
    def frontend(self) -> Preparer: ...

    @property
    def info(self) -> Mapping[str, Any]: ...

    def score_waves(self, waves: np.ndarray) -> np.ndarray: ...


ScorerFactory = Callable[[Config], WindowScorer]


def load_scorer(cfg: Config, *, allow_random_weights: bool = False) -> WindowScorer:
    """The ResNet scorer of a station's ``model`` section."""
    from listener.model.scorer import Scorer

    return Scorer(cfg.model, cfg.frontend, allow_random_weights=allow_random_weights)


class ModelRegistry:
    """Loads each distinct model once; hands every station its models, primary first.

    Args:
        scorer: one scorer for every station's primary (tests, benchmarks).
        load_scorer: how a primary ResNet is loaded (default :func:`load_scorer`).
        backends: loaded backends by model id (tests, benchmarks).
        allow_random_weights: a model without weights runs with random ones (demo).
        clock: the batchers' clock (tests step it).
    """

    def __init__(self, *, scorer: WindowScorer | None = None,
                 load_scorer: ScorerFactory | None = None,
                 backends: Mapping[str, ModelBackend] | None = None,
                 allow_random_weights: bool = False, clock: Clock = time.monotonic) -> None:
        self.scorer = scorer
        self.load_scorer = load_scorer
        self.backends = dict(backends or {})
        self.allow_random_weights = allow_random_weights
        self.clock = clock
        self.loaded: dict[str, LoadedModel] = {}
        # Windows of one length per batcher (a batch is one array); one model's
        # batchers share its weights and its scoring thread.
        self._batchers: dict[tuple[str, float], SharedBatcher[Tagged]] = {}

    async def models_for(self, cfg: Config, plans: Sequence[ModelPlan]) -> list[LoadedModel]:
        """The station's models, the primary first, loading those not loaded yet.

        Each comes with this station's own plan (window, hop, thresholds): a
        loaded copy is shared by configuration of the model, not of detection.
        """
        out = []
        for index, plan in enumerate(plans):
            key = self._key(cfg, plan, index)
            if key not in self.loaded:
                self.loaded[key] = await asyncio.to_thread(self._load, cfg, plan, index)
                self._batchers[(key, plan.window_s)] = self.loaded[key].batcher
                log.info("model %s loaded (%d distinct so far)", plan.id, len(self.loaded))
            elif index:
                log.info("station %s: model %s shares the copy already loaded",
                         cfg.station.id, plan.id)
            loaded = self.loaded[key]
            if (key, plan.window_s) not in self._batchers:  # alike() only when needed
                self._batchers[(key, plan.window_s)] = loaded.batcher.alike()
            out.append(replace(loaded, plan=plan, batcher=self._batchers[(key, plan.window_s)]))
        return out

    def _key(self, cfg: Config, plan: ModelPlan, index: int) -> str:
        entry = cfg.model.model_dump_json() if index == 0 else plan.entry.model_dump_json()
        return f"{index == 0}|{entry}|{cfg.frontend.model_dump_json()}"

    def _load(self, cfg: Config, plan: ModelPlan, index: int) -> LoadedModel:
        entry = plan.entry
        if index == 0 and plan.backend == "orcahello-resnet" and plan.id not in self.backends:
            scorer = self.scorer
            if scorer is None:
                scorer = (self.load_scorer(cfg) if self.load_scorer is not None else
                          load_scorer(cfg, allow_random_weights=self.allow_random_weights))
            return LoadedModel(plan, scorer.frontend.prepare_batch, self._batcher(
                scorer.score_waves, cfg.model.batch_size, cfg.model.max_batch_wait_s),
                dict(scorer.info), trained_levels_dbfs(plan.weights))
        backend = self.backends.get(plan.id)
        if backend is None:
            from listener.model.backends import load_backend

            backend = load_backend(plan, cfg.frontend,
                                   allow_random_weights=self.allow_random_weights)
        return LoadedModel(plan, backend.prepare_batch, self._batcher(
            backend.predict, entry.batch_size, entry.max_batch_wait_s), dict(backend.info),
            trained_levels_dbfs(plan.weights))

    def _batcher(self, score: Callable[[np.ndarray], np.ndarray], batch_size: int,
                 max_wait_s: float) -> SharedBatcher[Tagged]:
        return SharedBatcher(score, batch_size=batch_size, max_wait_s=max_wait_s,
                             clock=self.clock)

    async def aclose(self) -> None:
        """Stop every batcher (after every station has ended)."""
        for batcher in reversed(self._batchers.values()):  # the thread's owner last
            await batcher.aclose()
