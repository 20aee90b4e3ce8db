"""One extra model of a station: its own windows, batches and clips on shared audio.

A station with several models (``models:``) decodes each segment once; the
primary model runs in :class:`~listener.pipeline.station.StationPipeline`
itself (it drives the resume point), and every other model gets a
:class:`ModelLane` fed the same decoded blocks. A lane cuts its own window
grid (its ``window_s``/``hop_s``), resamples to its own rate (its backend's
``prepare_batch``, a decoded block's windows at once), batches on its own and
decides clips with its own :class:`~listener.detection.labels.LabelRule`, on
the station's clip grid.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

import numpy as np

from listener.audio.windows import Window, WindowCutter
from listener.detection.labels import LabelledAggregator, LabelledClip, LabelledWindow, LabelRule
from listener.model.backends.base import ModelBackend, ModelPlan
from listener.pipeline.batcher import MicroBatcher
from listener.pipeline.prepare import prepare_windows

log = logging.getLogger(__name__)

_NO_SAMPLES = np.zeros(0, dtype=np.float32)


class LaneHandler(Protocol):
    """Receives each clip a lane decided (:class:`listener.events.lanes.LaneEmitter`)."""

    async def labelled_clip(self, clip: LabelledClip, stream_key: str) -> None: ...


@dataclass(frozen=True)
class _Tagged:
    window: Window  # samples dropped
    stream_key: str
    wave: np.ndarray


class ModelLane:
    """An extra model's windows -> batches -> labelled clips, fed decoded blocks."""

    def __init__(self, plan: ModelPlan, backend: ModelBackend, handler: LaneHandler, *,
                 clip_s: float, max_backlog_s: float) -> None:
        self.plan = plan
        self.backend = backend
        self.handler = handler
        self.cutter = WindowCutter(plan.window_s, plan.hop_s)
        self.rule = LabelRule(plan.labels, plan.targets, plan.rule, plan.window_s, plan.hop_s,
                              clip_s)
        self.aggregator = LabelledAggregator(self.rule, plan.id)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"prepare-{plan.id}"[:15])
        # No station metrics here: those count the primary model's windows.
        self.batcher: MicroBatcher[_Tagged] = MicroBatcher(
            self._score, batch_size=plan.entry.batch_size,
            max_wait_s=plan.entry.max_batch_wait_s, max_backlog_s=max_backlog_s,
            hop_s=plan.hop_s)
        self._key: str | None = None
        self.windows_scored = 0
        self.clips_decided = 0

    @property
    def id(self) -> str:
        return self.plan.id

    def reset(self, anchor_s: float, sample_rate: int, utc_origin: datetime | None) -> None:
        """A new decoder run: the same reset the primary's cutter gets."""
        self.cutter.reset(anchor_s, sample_rate, utc_origin)

    async def push(self, block: np.ndarray, stream_key: str, skip_before_s: float) -> None:
        """Cut a decoded block into this model's windows and queue them for scoring."""
        windows = [w for w in self.cutter.push(block) if w.start_s >= skip_before_s - 1e-6]
        if not windows:
            return
        waves = await asyncio.get_running_loop().run_in_executor(
            self._pool, self._prepare_all, windows)
        for w, wave in zip(windows, waves, strict=True):
            self.batcher.put(_Tagged(replace(w, samples=_NO_SAMPLES), stream_key, wave))

    def _prepare_all(self, windows: list[Window]) -> list[np.ndarray]:
        return prepare_windows(self.backend.prepare_batch, windows)

    def _score(self, batch: list[_Tagged]) -> np.ndarray:
        return np.asarray(self.backend.predict(np.stack([t.wave for t in batch])),
                          dtype=np.float64)

    async def consume(self) -> None:
        """Score batches and decide clips until the batcher is closed and drained."""
        async for batch, probs in self.batcher.batches():
            for tagged, p in zip(batch, probs, strict=True):
                if tagged.stream_key != self._key:
                    await self._flush()
                    self.aggregator = LabelledAggregator(self.rule, self.plan.id)
                    self._key = tagged.stream_key
                w = tagged.window
                self.windows_scored += 1
                lw = LabelledWindow(w.start_s, w.end_s, tuple(float(x) for x in p), w.utc)
                for clip in self.aggregator.add(lw):
                    await self._emit(clip)

    async def finish(self) -> None:
        """The stream ended by itself: decide the last, possibly shorter, clip."""
        await self._flush(self.cutter.position_s)

    async def _flush(self, end_s: float | None = None) -> None:
        if self._key is None:
            return
        for clip in self.aggregator.flush(end_s):
            await self._emit(clip)

    async def _emit(self, clip: LabelledClip) -> None:
        if not clip.clip.windows or self._key is None:
            return
        self.clips_decided += 1
        try:
            await self.handler.labelled_clip(clip, self._key)
        except Exception:
            # A lane never stops the station: the primary model still alerts.
            log.exception("model %s: handling clip %.1f s failed", self.id, clip.clip.start_s)

    def close(self) -> None:
        """Release the worker threads (after the consumer has ended)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.batcher.shutdown()
