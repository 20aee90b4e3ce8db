"""What a station pipeline takes and gives: its source, handler, resume point, progress.

Typed seams between :mod:`listener.pipeline.station` and the parts the
station builder (:mod:`listener.runtime.builder`) plugs into it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import numpy as np

from listener.audio.level import LevelRange
from listener.sources.segments import Gap, Position, Segment


class SegmentSource(Protocol):
    """Where segments come from: a live stream (:mod:`listener.sources`) or the archive."""

    live_edge_utc: datetime | None
    last_playlist_ok: float | None

    def segments(self, resume: Position | None) -> AsyncIterator[Segment | Gap]: ...

    async def fetch_or_gap(self, segment: Segment) -> bytes | Gap: ...

    @property
    def stop_event(self) -> asyncio.Event: ...


# Windows of one rate and one length -> (B, samples') model-rate mono, row i
# exactly what window i alone gives (Frontend.prepare_batch).
PrepareBatchFn = Callable[[Sequence[np.ndarray], int], np.ndarray]
ScoreWavesFn = Callable[[np.ndarray], np.ndarray]  # (B, S) waveforms -> (B,) scores


@dataclass(frozen=True)
class PipelineSettings:
    """The values of a station's config its pipeline reads (nothing else of it).

    Attributes:
        start_offset_s: ``stream.ffmpeg_start_offset_s``, the node's clock calibration.
        clip_before_s: audio kept before a clip for its audio file (``outputs.clips``).
        resume_bound_s: how far behind the primary another model may hold the
            resume point (``buffer.max_backlog_s``).
    """

    start_offset_s: float = 0.0
    clip_before_s: float = 0.0
    resume_bound_s: float = 600.0


@dataclass(frozen=True)
class ResumePoint:
    """Where a restart picks up: re-read after ``position``, score from ``clip_end_s``
    on; each model from its own ``lane_clip_end_s`` when that is later."""

    position: Position
    clip_end_s: float
    lane_clip_end_s: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ClipProgress:
    """Reported after each clip reached the handler: clips up to ``clip_end_s`` are done.

    ``resume_sequence`` is the last segment that need not be read again (one
    segment before the clip, to warm the AAC decoder).
    """

    stream_key: str
    resume_sequence: int
    clip_end_s: float
    lane_clip_end_s: Mapping[str, float] = field(default_factory=dict)


ProgressFn = Callable[[ClipProgress], None]


class PipelineObserver(Protocol):
    """Told of each scored window and each stretch of audio lost (the console's
    live view and coverage ledger). Called on the event loop; must not block."""

    def window_scored(self, start_s: float, end_s: float, utc: datetime | None,
                      score: float) -> None: ...

    def audio_lost(self, reason: str, utc_start: datetime | None,
                   seconds: float | None) -> None: ...


@dataclass(frozen=True)
class PipelineStats:
    """A snapshot of the pipeline's counters (for probes, replay and progress displays)."""

    segments_fed: int
    windows_scored: int
    backlog_s: float
    last_segment_mono: float | None
    last_scored_mono: float | None
    last_scored_utc: datetime | None
    # The models whose trained levels the stream has stayed outside of, with the side.
    level_outside: tuple[tuple[LevelRange, str], ...] = ()


class Progress(Protocol):
    """A progress display: ``bar(done_s, total_s)`` repeatedly (total None when
    unknown), then ``close()`` by its owner (``listener.cli.progress.ProgressBar``)."""

    def __call__(self, done: float, total: float | None) -> None: ...

    def close(self) -> None: ...
