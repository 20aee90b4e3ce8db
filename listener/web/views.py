"""What the console needs from a running station, as small typed parts.

The daemon (the composition root) builds one :class:`StationView` per
station and hands it to :class:`~listener.web.console.Console`; the
console never reaches into the pipeline. The pipeline feeds :class:`LiveFeed`
(window scores) and the :class:`~listener.audio.history.AudioHistory` (audio)
it already fills for the clip sink.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from listener.audio.history import AudioHistory
from listener.web.coverage import CoverageLedger

#: A JSON-able status snapshot: stream URL, live edge, lag, model, build, ...
StatusFn = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class ScorePoint:
    """One scored window: stream offset and UTC (Unix s, ``None`` if unknown) of its start."""

    offset_s: float
    utc: float | None
    score: float


class LiveFeed:
    """The last ``max_points`` window scores and the audio ring for the live view.

    ``observe`` may be called from any thread (the pipeline's scorer).
    """

    def __init__(self, history: AudioHistory | None, max_points: int = 900) -> None:
        self.history = history
        self._lock = threading.Lock()
        self._points: deque[ScorePoint] = deque(maxlen=max_points)
        self._seq = 0  # number of points ever observed

    def observe(self, offset_s: float, utc: float | None, score: float) -> None:
        with self._lock:
            self._points.append(ScorePoint(offset_s, utc, float(score)))
            self._seq += 1

    def scores_after(self, seq: int) -> tuple[list[ScorePoint], int]:
        """Points observed after sequence number ``seq``, and the new sequence number."""
        with self._lock:
            new = min(self._seq - seq, len(self._points))
            points = list(self._points)[len(self._points) - new:] if new > 0 else []
            return points, self._seq

    def audio(self, start_s: float, end_s: float) -> tuple[np.ndarray, float, int] | None:
        """Held audio within ``[start_s, end_s)``: samples, offset of the first, rate."""
        if self.history is None:
            return None
        got = self.history.get(start_s, end_s)
        if got is None:
            return None
        return got[0], got[1], self.history.sample_rate

    def audio_until_s(self) -> float:
        """Stream offset just after the newest held sample (-inf when none)."""
        return self.history.available_until_s if self.history is not None else float("-inf")


@dataclass
class StationView:
    """Everything the console shows for one station.

    Args:
        station_id: the station's id (URLs and filters use it).
        status: returns the status snapshot (called per request).
        live: recent scores and audio.
        events_path: the JSON-lines event file (``outputs.jsonl``), if any.
        clips_dir: the clip sink's folder (``outputs.clips``), if any.
        coverage: the station's coverage ledger, if recorded.
        reviews_path: where reviews are appended; beside the events by default.
        threshold: the local (per-window) threshold the live view marks.

    The status snapshot may hold ``last_error``: ``None``, or
    the runtime's last-error document (the overview and status page show it).
    """

    station_id: str
    status: StatusFn
    live: LiveFeed
    events_path: Path | None = None
    clips_dir: Path | None = None
    coverage: CoverageLedger | None = None
    reviews_path: Path | None = field(default=None)
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.reviews_path is None and self.events_path is not None:
            self.reviews_path = self.events_path.with_name(
                f"{self.events_path.stem}.reviews.jsonl")


class ConsoleObserver:
    """Feeds the live view and the coverage ledger from the pipeline's events
    (a :class:`~listener.pipeline.station.PipelineObserver`).

    Each scored window covers one hop of stream time (its start to the next
    window's start). A hole between scored windows that no ``audio_lost`` call
    explained (windows shed under backlog, audio ffmpeg never produced) is
    recorded as lost with reason ``unscored``, so the ledger never shows time
    as merely unknown while the daemon was running.
    """

    def __init__(self, live: LiveFeed, coverage: CoverageLedger | None, hop_s: float,
                 max_hole_s: float = 3600.0) -> None:
        self.live = live
        self.coverage = coverage
        self.hop_s = hop_s
        self.max_hole_s = max_hole_s
        self._last_end: float | None = None

    def window_scored(self, start_s: float, end_s: float, utc: datetime | None,
                      score: float) -> None:
        t = utc.timestamp() if utc is not None else None
        self.live.observe(start_s, t, score)
        if t is None or self.coverage is None:
            return
        last = self._last_end
        if last is not None and MERGE_HOLE_S < t - last < self.max_hole_s \
                and not self.coverage.spans(last, t):
            self.coverage.record(last, t, "lost", "unscored")
        self.coverage.record(t, t + self.hop_s, "scored")
        self._last_end = t + self.hop_s

    def audio_lost(self, reason: str, utc_start: datetime | None,
                   seconds: float | None) -> None:
        if self.coverage is None or utc_start is None or not seconds:
            return
        t = utc_start.timestamp()
        self.coverage.record(t, t + seconds, "lost", reason)


#: Holes shorter than this between scored windows are float slack, not loss.
MERGE_HOLE_S = 1.5
