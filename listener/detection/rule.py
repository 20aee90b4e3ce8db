"""Window scores -> per-clip decisions (OrcaHello's production rule) -> encounters.

The rule, for one clip of ``clip_s`` seconds cut into windows of ``window_s``
every ``hop_s`` (60 s, 2 s, 1 s in production):

* window scores ``c_i`` for the windows lying wholly inside the clip;
* one score per hop-long unit ("second") of the clip: the mean of the scores of
  the windows overlapping that unit. With 2 s / 1 s this is exactly
  ``s_0 = c_0, s_j = (c_{j-1} + c_j) / 2, s_59 = c_58``;
* a unit is positive when ``s_j > local_threshold``;
* the clip is a detection when at least ``global_threshold`` units are
  positive; its confidence is ``100 * mean(positive s_j)`` (0 when none).

Clips are consecutive intervals of the stream's own timeline (stream offset
``k * clip_s``), so a replay and the live daemon cut the same clips.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from listener.config import DetectionConfig

_EPS = 1e-6


@dataclass(frozen=True)
class WindowScore:
    """One scored window: ``start_s`` is its offset in the stream (or file)."""

    start_s: float
    end_s: float
    score: float
    utc: datetime | None = None


@dataclass(frozen=True)
class SecondScore:
    start_s: float  # from the clip start
    score: float | None  # None: no window covered this unit (a gap)
    positive: bool


@dataclass(frozen=True)
class ClipResult:
    """The decision for one clip of the stream."""

    start_s: float
    end_s: float
    utc_start: datetime | None
    seconds: tuple[SecondScore, ...]
    windows: tuple[WindowScore, ...]
    detected: bool
    confidence: float
    windows_expected: int

    @property
    def positive_seconds(self) -> list[SecondScore]:
        return [s for s in self.seconds if s.positive]

    @property
    def complete(self) -> bool:
        return len(self.windows) == self.windows_expected


def decide(scores: Sequence[float], cfg: DetectionConfig) -> tuple[list[float], bool, float]:
    """The rule on one full clip's window scores ``c_0..c_{n-1}`` (hop-aligned).

    Returns ``(per-unit scores, detected, confidence)``. A convenience for
    tests and tools; :func:`decide_clip` is the general form with gaps.
    """
    windows = [WindowScore(i * cfg.hop_s, i * cfg.hop_s + cfg.window_s, float(c))
               for i, c in enumerate(scores)]
    end = (len(scores) - 1) * cfg.hop_s + cfg.window_s if scores else cfg.clip_s
    clip = decide_clip(windows, 0.0, end, cfg)
    return [s.score or 0.0 for s in clip.seconds], clip.detected, clip.confidence


def decide_clip(windows: Sequence[WindowScore], start_s: float, end_s: float,
                cfg: DetectionConfig) -> ClipResult:
    """Apply the rule to the windows of the clip ``[start_s, end_s)``.

    ``windows`` must lie inside the clip. Units are ``hop_s`` long from
    ``start_s`` up to the end of the clip's last possible window; a unit no
    window covers (audio lost to a gap) scores ``None`` and is not positive.
    """
    hop, win = cfg.hop_s, cfg.window_s
    n_expected = max(0, math.floor((end_s - start_s - win) / hop + _EPS) + 1)
    span = (n_expected - 1) * hop + win if n_expected else end_s - start_s
    n_units = max(1, math.ceil(span / hop - _EPS))
    sums = [0.0] * n_units
    counts = [0] * n_units
    for w in windows:
        first = math.floor((w.start_s - start_s) / hop + _EPS)
        last = math.ceil((w.end_s - start_s) / hop - _EPS) - 1
        for j in range(max(first, 0), min(last, n_units - 1) + 1):
            sums[j] += w.score
            counts[j] += 1
    seconds = []
    for j in range(n_units):
        score = sums[j] / counts[j] if counts[j] else None
        positive = score is not None and score > cfg.local_threshold
        seconds.append(SecondScore(round(j * hop, 6), score, positive))
    positives = [s.score for s in seconds if s.positive and s.score is not None]
    detected = len(positives) >= cfg.global_threshold
    confidence = 100.0 * sum(positives) / len(positives) if positives else 0.0
    utc = None
    for w in windows:
        if w.utc is not None:
            utc = w.utc - timedelta(seconds=w.start_s - start_s)
            break
    return ClipResult(start_s, end_s, utc, tuple(seconds), tuple(windows), detected,
                      confidence, n_expected)


class ClipAggregator:
    """Streams window scores into consecutive clips of the stream timeline.

    Feed windows in start order with :meth:`add`; a clip is returned once a
    window past it arrives (so it never waits for the next clip's first
    window to be *scored*, only to exist). :meth:`flush` closes the open clip
    at the end of a file or stream. Windows that straddle a clip boundary
    belong to no clip, as in production where each minute was its own file.
    :meth:`close_early` decides a clip before its end when a live stream
    stalls in the middle of it.
    """

    def __init__(self, cfg: DetectionConfig, origin_s: float = 0.0,
                 decided_to: float | None = None) -> None:
        self.cfg = cfg
        self.origin_s = origin_s
        self._clip_index: int | None = None
        self._windows: list[WindowScore] = []
        # (clip index, offset): the stream was decided up to offset (a clip decided
        # early, before a restart too); the rest of that clip starts there.
        self._decided_to: tuple[int, float] | None = None
        if decided_to is not None and math.isfinite(decided_to):
            self._decided_to = (self._index_of(decided_to), decided_to)

    def _bounds(self, index: int) -> tuple[float, float]:
        start = self.origin_s + index * self.cfg.clip_s
        if self._decided_to is not None and self._decided_to[0] == index:
            # The rest of a clip decided early: a clip of its own, from where that
            # one ended, so the two never share a start (nor an event id).
            return self._decided_to[1], start + self.cfg.clip_s
        return start, start + self.cfg.clip_s

    def _index_of(self, t: float) -> int:
        return math.floor((t - self.origin_s) / self.cfg.clip_s + _EPS)

    def add(self, window: WindowScore) -> list[ClipResult]:
        """Take one window; return the clips it completes (usually none)."""
        done: list[ClipResult] = []
        index = self._index_of(window.start_s)
        if self._clip_index is not None and index > self._clip_index:
            done.append(self._close())
        if self._clip_index is None or index > self._clip_index:
            self._clip_index = index
        start, end = self._bounds(index)
        # A window across the start of a clip's rest (decided early) still scores
        # the rest's first units, as it would have in the whole clip.
        if window.end_s <= end + _EPS and window.end_s > start + _EPS:
            self._windows.append(window)
        return done

    def advance(self, t: float) -> list[ClipResult]:
        """The stream has moved past ``t`` (e.g. across a gap): close older clips."""
        if self._clip_index is None:
            return []
        _, end = self._bounds(self._clip_index)
        if t >= end - self.cfg.window_s + self.cfg.hop_s - _EPS:
            return [self._close()]
        return []

    def flush(self, end_s: float | None = None) -> list[ClipResult]:
        """Close the open clip; ``end_s`` trims it (end of a file shorter than a clip)."""
        if self._clip_index is None:
            return []
        return [self._close(end_s)]

    @property
    def open_end_s(self) -> float | None:
        """Where the open clip's last window ends (None: no clip open)."""
        if self._clip_index is None or not self._windows:
            return None
        return max(w.end_s for w in self._windows)

    def close_early(self, end_s: float | None = None) -> list[ClipResult]:
        """Decide the open clip now, on the windows it has, ending with the last one
        (or at ``end_s``, if later: where the station's other models cut theirs).

        For a live stream that stalled mid-clip: a call in its first part is
        alerted now, not when the stream comes back (which may be hours). Windows
        of the rest of that clip, if the stream comes back in it, make a clip of
        their own.
        """
        last = self.open_end_s
        if self._clip_index is None or last is None:
            return []
        index, clip_end = self._clip_index, self._bounds(self._clip_index)[1]
        end = min(clip_end, max(last, end_s if end_s is not None else last))
        clip = self._close(end)
        self._decided_to = (index, end)
        return [clip]

    def _close(self, end_s: float | None = None) -> ClipResult:
        assert self._clip_index is not None
        start, end = self._bounds(self._clip_index)
        if end_s is not None:
            end = min(end, max(end_s, start))
        clip = decide_clip(self._windows, start, end, self.cfg)
        self._windows = []
        self._clip_index = None
        return clip


def clip_times(clip: ClipResult) -> tuple[float, float]:
    """A clip's (start, end) on a timeline that survives stream restarts.

    Unix seconds when the clip has a UTC time, else its stream offsets.
    """
    if clip.utc_start is not None:
        t = clip.utc_start.timestamp()
        return t, t + (clip.end_s - clip.start_s)
    return clip.start_s, clip.end_s


@dataclass
class Encounter:
    """Detected clips less than ``encounter_gap_s`` apart, as one event series.

    Plain values only, so an open encounter can be saved in the state file and
    carried across a restart.
    """

    id: str
    start_t: float  # timeline of clip_times()
    end_t: float
    start_utc: datetime | None
    end_utc: datetime | None
    clip_count: int = 1
    peak_confidence: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "start_t": self.start_t, "end_t": self.end_t,
                "start_utc": self.start_utc.isoformat() if self.start_utc else None,
                "end_utc": self.end_utc.isoformat() if self.end_utc else None,
                "clip_count": self.clip_count, "peak_confidence": self.peak_confidence}

    @classmethod
    def from_dict(cls, doc: dict[str, object]) -> Encounter:
        def utc(v: object) -> datetime | None:
            return datetime.fromisoformat(str(v)) if v else None

        def num(key: str, default: float = 0.0) -> float:
            return float(str(doc.get(key, default)))

        return cls(str(doc["id"]), num("start_t"), num("end_t"),
                   utc(doc.get("start_utc")), utc(doc.get("end_utc")),
                   int(num("clip_count", 1)), num("peak_confidence"))


@dataclass(frozen=True)
class EncounterEvent:
    kind: str  # "start" | "update" | "end"
    encounter: Encounter
    clip: ClipResult | None


class EncounterTracker:
    """Groups detected clips into encounters with start / update / end events."""

    def __init__(self, gap_s: float, current: Encounter | None = None) -> None:
        self.gap_s = gap_s
        self.current = current

    def observe(self, clip: ClipResult, encounter_id: str) -> list[EncounterEvent]:
        """Feed every clip in order; ``encounter_id`` is used if this clip opens one."""
        start, end = clip_times(clip)
        events = self.advance(start)
        if clip.detected:
            end_utc = (clip.utc_start + timedelta(seconds=clip.end_s - clip.start_s)
                       if clip.utc_start else None)
            if self.current is None:
                self.current = Encounter(encounter_id, start, end, clip.utc_start, end_utc,
                                         1, clip.confidence)
                events.append(EncounterEvent("start", self.current, clip))
            else:
                enc = self.current
                enc.end_t, enc.end_utc = end, end_utc
                enc.clip_count += 1
                enc.peak_confidence = max(enc.peak_confidence, clip.confidence)
                events.append(EncounterEvent("update", enc, clip))
        return events

    def advance(self, t: float) -> list[EncounterEvent]:
        """The timeline reached ``t``: end the encounter if the gap has passed."""
        if self.current is not None and t - self.current.end_t >= self.gap_s - _EPS:
            ended, self.current = self.current, None
            return [EncounterEvent("end", ended, None)]
        return []

    def close(self) -> list[EncounterEvent]:
        """End any open encounter (end of a file or a replay)."""
        if self.current is None:
            return []
        ended, self.current = self.current, None
        return [EncounterEvent("end", ended, None)]
