"""One model of a station: its own windows, batches, clips and progress on shared audio.

Every model of a station is a :class:`ModelLane`; the primary is lane 0. The
station pipeline decodes each segment once and hands every decoded block to
every lane. A lane cuts its own window grid (its ``window_s``/``hop_s``),
resamples to its model's rate (``prepare_batch``, a block's windows at once,
in the process's resample pool), queues them in its own lane of the model's
:class:`~listener.pipeline.batcher.SharedBatcher`, and decides clips with its
own :class:`~listener.detection.labels.LabelRule` on the station's clip grid.
A model that gives one score per window (the ResNet scorer) is a two-label
model, ``(1 - p, p)``, whose target score is ``p`` exactly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

import numpy as np

from listener.audio.windows import Window, WindowCutter
from listener.detection.labels import LabelledAggregator, LabelledClip, LabelledWindow, LabelRule
from listener.pipeline.batcher import BatchLane
from listener.pipeline.contracts import PrepareBatchFn
from listener.pipeline.prepare import prepare_windows

log = logging.getLogger(__name__)

_NO_SAMPLES = np.zeros(0, dtype=np.float32)
# Streams whose early-decided clip end a lane remembers (a stream seldom returns
# after another has come; a node's folders change at most a few times a day).
_DECIDED_EARLY_KEPT = 8


class LaneHandler(Protocol):
    """Receives each clip a lane decided (:class:`listener.events.lanes.LaneEmitter`).

    Answers True once the clip's records are durable (or need none); False
    keeps the station's resume point before it.
    """

    async def labelled_clip(self, clip: LabelledClip, stream_key: str) -> bool: ...


@dataclass(frozen=True)
class Tagged:
    """A queued window (samples dropped), its stream, and its model-rate waveform."""

    window: Window
    stream_key: str
    wave: np.ndarray


@dataclass(frozen=True)
class LaneProgress:
    """The last clip of a lane whose records are durable."""

    stream_key: str
    clip_end_s: float


WindowHook = Callable[[LabelledWindow, float], None]  # (window, target score)
ProgressHook = Callable[["ModelLane"], None]


class ModelLane:
    """A model's windows -> batches -> labelled clips, fed the station's decoded blocks.

    Args:
        lane_id: the model's id; ``index`` 0 is the primary.
        rule: the model's decision rule (labels, targets, windows, clips).
        prepare: the model's ``prepare_batch``.
        batcher: this lane's queue in the model's shared batcher.
        handler: where decided clips go.
        pool: the process's resample pool.
        on_window: told of each scored window (the primary's metrics and console).
    """

    def __init__(self, lane_id: str, index: int, rule: LabelRule, prepare: PrepareBatchFn,
                 batcher: BatchLane[Tagged], handler: LaneHandler, *,
                 pool: concurrent.futures.Executor, on_window: WindowHook | None = None,
                 skip_before: dict[str, float] | None = None) -> None:
        self.id = lane_id
        self.index = index
        self.rule = rule
        self.prepare = prepare
        self.batcher = batcher
        self.handler = handler
        self.pool = pool
        self.on_window = on_window
        det = rule.detection
        self.cutter = WindowCutter(det.window_s, det.hop_s)
        self.aggregator = LabelledAggregator(rule, lane_id)
        # Windows before these offsets were decided before a restart (per stream).
        self.skip_before: dict[str, float] = dict(skip_before or {})
        # Where a clip decided early (stalled) ended, per stream: the rest of it
        # starts there even if another stream came between (a new aggregator).
        self._decided_early: dict[str, float] = {}
        self.on_progress: ProgressHook | None = None
        self.progress: LaneProgress | None = None
        self.last_decided_start_s: float | None = None
        self.last_window_mono: float | None = None
        self._key: str | None = None
        # Held while windows are decided, so a stalled-stream decision (from the
        # station's periodic care) never interleaves with the consumer's.
        self._deciding = asyncio.Lock()
        self.windows_scored = 0
        self.clips_decided = 0

    @property
    def stream_key(self) -> str | None:
        """The stream of the clip being collected."""
        return self._key

    @property
    def hop_s(self) -> float:
        return self.rule.detection.hop_s

    def reset(self, anchor_s: float, sample_rate: int, utc_origin: datetime | None) -> None:
        """A new decoder run: every lane's cutter starts at its first sample."""
        self.cutter.reset(anchor_s, sample_rate, utc_origin)

    async def push(self, block: np.ndarray, stream_key: str) -> None:
        """Cut a decoded block into this model's windows and queue them for scoring."""
        skip = self.skip_before.get(stream_key, float("-inf"))
        windows = [w for w in self.cutter.push(block) if w.start_s >= skip - 1e-6]
        if not windows:
            return
        waves = await asyncio.get_running_loop().run_in_executor(
            self.pool, prepare_windows, self.prepare, windows)
        for w, wave in zip(windows, waves, strict=True):
            self.batcher.put(Tagged(replace(w, samples=_NO_SAMPLES), stream_key, wave))

    async def consume(self) -> None:
        """Score batches and decide clips until the batcher is closed and drained."""
        async for batch, scores in self.batcher.batches():
            async with self._deciding:
                for tagged, row in zip(batch, scores, strict=True):
                    if tagged.stream_key != self._key:
                        await self._flush()
                        self.aggregator = LabelledAggregator(
                            self.rule, self.id, decided_to=self._decided_to(tagged.stream_key))
                        self._key = tagged.stream_key
                    await self._window(tagged, row)

    def _decided_to(self, key: str) -> float | None:
        """Where ``key``'s stream was decided to: a clip decided early, in this run or
        before a restart, has its rest start there."""
        ends = [t for t in (self.skip_before.get(key), self._decided_early.get(key))
                if t is not None]
        return max(ends) if ends else None

    def stalled_end(self, idle_s: float) -> float | None:
        """Where the open clip's last window ends, if the stream stalled in it: no
        window for ``idle_s`` seconds and none waiting to be scored; else None."""
        last = self.last_window_mono
        if last is None or time.monotonic() - last < idle_s or not self.batcher.idle:
            return None
        return self.aggregator.open_end_s

    async def decide_stalled(self, idle_s: float, end_s: float | None = None) -> int:
        """Decide the open clip early if the stream stalled in it (:meth:`stalled_end`),
        cut at its last window or at ``end_s`` if later (the station's other models'
        cut, so their clips pair). Returns the number of clips decided (0 or 1)."""
        async with self._deciding:
            if self.stalled_end(idle_s) is None:
                return 0
            last = self.last_window_mono or time.monotonic()
            clips = self.aggregator.close_early(end_s)
            for clip in clips:
                c = clip.clip
                if self._key is not None:
                    self._decided_early.pop(self._key, None)  # newest last; a few kept
                    self._decided_early[self._key] = c.end_s
                    while len(self._decided_early) > _DECIDED_EARLY_KEPT:
                        del self._decided_early[next(iter(self._decided_early))]
                log.info("model %s: no audio for %.0f s in the middle of clip %.0f-%.0f s of %s;"
                         " decided on its %d windows so far", self.id, time.monotonic() - last,
                         c.start_s, c.end_s, self._key, len(c.windows))
                await self._emit(clip)
        return len(clips)

    async def _window(self, tagged: Tagged, row: np.ndarray) -> None:
        w = tagged.window
        probs = (1.0 - float(row), float(row)) if np.ndim(row) == 0 else \
            tuple(float(x) for x in row)
        lw = LabelledWindow(w.start_s, w.end_s, probs, w.utc)
        self.windows_scored += 1
        self.last_window_mono = time.monotonic()
        score = self.rule.target_score(probs)  # once: for the hook and the rule
        if self.on_window is not None:
            self.on_window(lw, score)
        for clip in self.aggregator.add(lw, score):
            await self._emit(clip)

    async def finish(self) -> None:
        """The stream ended by itself: decide the last, possibly shorter, clip."""
        async with self._deciding:
            await self._flush(self.cutter.position_s)

    async def _flush(self, end_s: float | None = None) -> None:
        if self._key is None:
            return
        for clip in self.aggregator.flush(end_s):
            await self._emit(clip)

    async def _emit(self, clip: LabelledClip) -> None:
        key = self._key
        if not clip.clip.windows or key is None:
            return
        self.clips_decided += 1
        try:
            durable = await self.handler.labelled_clip(clip, key)
        except Exception:
            if self.index == 0:
                raise
            # Another model never stops the station: the primary still alerts.
            log.exception("model %s: handling clip %.1f s failed", self.id, clip.clip.start_s)
            return
        self.last_decided_start_s = clip.clip.start_s
        if durable:
            self.progress = LaneProgress(key, clip.clip.end_s)
        if self.on_progress is not None:
            self.on_progress(self)

    def close(self) -> None:
        """Leave the shared batcher (after :meth:`consume` has ended)."""
        self.batcher.shutdown()


def resume_ends(stream_key: str, primary_end_s: float,
                lanes: Sequence[tuple[str, LaneProgress | None]],
                bound_s: float) -> dict[str, float]:
    """Where each model resumes after a restart: its last durable clip's end.

    A model that is behind the primary (a slow shadow, or one that never
    decides) is held no more than ``bound_s`` (``buffer.max_backlog_s``)
    behind it: that much audio it would have shed anyway, and so it can
    never pin the resume point (docs/daemon.md, "Several models").
    """
    floor = max(0.0, primary_end_s - bound_s)
    ends = {}
    for lane_id, progress in lanes:
        end = progress.clip_end_s if progress is not None \
            and progress.stream_key == stream_key else floor
        ends[lane_id] = max(floor, end)
    return ends
