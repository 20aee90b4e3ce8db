"""What ``listener replay`` reports: the clips it kept, and the summary of a range.

:class:`RangeClips` sits between the pipeline and the emitter. The pipeline
cuts clips on each stream's own grid (60 s from the folder start), from all
the audio it decodes: the planned segments, i.e. the range plus at most one
warm-up segment before it and the rest of the last segment after it. Clips
that overlap [from, to) go on to the emitter and the sinks; the few that lie
wholly outside (only possible within those margins) are dropped and counted.

:class:`ReplaySummary` is ``summary.json`` and the printed report. Counts add
up across the runs of a resumed replay; see ``docs/replay.md``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from listener.atomic import atomic_write
from listener.detection.labels import ClipLabels
from listener.detection.rule import ClipResult
from listener.events.emitter import Emitter
from listener.events.records import iso_utc
from listener.replay.plan import ArchiveGap
from listener.sources.segments import Gap

log = logging.getLogger(__name__)

ClipCallback = Callable[[ClipResult, str], None]

_STATUSES = ("running", "complete", "interrupted", "failed")


class RangeClips:
    """The replay's clip filter: clips overlapping the range go to each model's emitter.

    Args:
        start_utc, end_utc: the range; a clip is kept when its UTC span overlaps it.
        on_clip: called with every kept clip of the primary after the sinks have it.
        owns: narrows what is reported (a part of a sharded replay reports the
            clips of its own chunk only, though it scores one clip past it).

    ``clips`` and ``outside`` count the primary's clips; ``detections`` lists
    every model's, each with its ``model``.
    """

    def __init__(self, start_utc: datetime, end_utc: datetime,
                 on_clip: ClipCallback | None = None,
                 owns: Callable[[ClipResult], bool] | None = None) -> None:
        self.start_utc = start_utc
        self.end_utc = end_utc
        self.on_clip = on_clip
        self.owns = owns
        self.clips = 0
        self.outside = 0
        self.detections: list[dict[str, Any]] = []

    def keeps(self, clip: ClipResult) -> bool:
        return clip_overlaps(clip, self.start_utc, self.end_utc) and (
            self.owns is None or self.owns(clip))

    def target(self, model_id: str, emitter: Emitter) -> _RangeTarget:
        """What one model's lane hands its clips to."""
        return _RangeTarget(self, model_id, emitter)


class _RangeTarget:
    def __init__(self, ranges: RangeClips, model_id: str, emitter: Emitter) -> None:
        self.ranges = ranges
        self.model_id = model_id
        self.emitter = emitter
        self.primary = emitter.role == "primary"

    async def clip(self, clip: ClipResult, stream_key: str,
                   labels: ClipLabels | None = None) -> bool:
        """Emit ``clip`` if the replay keeps it; count it either way.

        True once the emitter's durable sinks hold its records.
        """
        ranges = self.ranges
        if not ranges.keeps(clip):
            ranges.outside += self.primary
            log.debug("clip %s of %s is outside the range; not reported",
                      iso_utc(clip.utc_start), stream_key)
            return self.emitter.accepted
        durable = await self.emitter.clip(clip, stream_key, labels)
        if clip.detected:
            ranges.detections.append({**detection_json(clip, stream_key),
                                      "model": self.model_id})
        if self.primary:
            ranges.clips += 1
            if ranges.on_clip is not None:
                ranges.on_clip(clip, stream_key)
        return durable


def clip_overlaps(clip: ClipResult, start_utc: datetime, end_utc: datetime) -> bool:
    """Whether the clip's UTC span overlaps ``[start_utc, end_utc)`` (True without UTC)."""
    if clip.utc_start is None:
        return True
    end = clip.utc_start + timedelta(seconds=clip.end_s - clip.start_s)
    return end > start_utc and clip.utc_start < end_utc


def detection_json(clip: ClipResult, stream_key: str) -> dict[str, Any]:
    """One detected clip as the summary lists it."""
    end = None
    if clip.utc_start is not None:
        end = clip.utc_start + timedelta(seconds=clip.end_s - clip.start_s)
    return {"utc_start": iso_utc(clip.utc_start), "utc_end": iso_utc(end),
            "confidence": round(clip.confidence, 3), "stream_key": stream_key,
            "clip_start_s": round(clip.start_s, 6),
            "positive_seconds": len(clip.positive_seconds)}


def archive_gap_json(gap: ArchiveGap) -> dict[str, Any]:
    """An archive gap (from planning) as the summary lists it."""
    return {"kind": gap.kind, "utc_start": iso_utc(gap.start_utc),
            "utc_end": iso_utc(gap.end_utc), "duration_s": round(gap.duration_s, 3),
            "reason": gap.reason, "stream_key": gap.stream_key}


def lost_segment_json(gap: Gap) -> dict[str, Any]:
    """A segment that could not be fetched, as the summary lists it."""
    return {"url": gap.url, "stream_key": gap.stream_key, "sequence": gap.from_sequence,
            "utc_start": iso_utc(gap.utc_start), "duration_s": gap.duration_s,
            "reason": gap.reason}


@dataclass
class ReplaySummary:
    """The outcome of a replay of [start_utc, end_utc) of ``node`` (``summary.json``).

    ``audio_s`` is the archived audio inside the range; ``covered_s`` the part
    of it handed to the decoder so far (lost segments excluded); ``wall_s``
    and the counts add up over the runs of a resumed replay.
    """

    node: str
    start_utc: datetime
    end_utc: datetime
    status: str = "running"
    error: str | None = None
    audio_s: float = 0.0
    gap_s: float = 0.0
    covered_s: float = 0.0
    archive_gaps: list[dict[str, Any]] = field(default_factory=list)
    lost_segments: list[dict[str, Any]] = field(default_factory=list)
    segments_planned: int = 0
    segments_fetched: int = 0
    windows_scored: int = 0
    clips: int = 0
    clips_outside_range: int = 0
    detections: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    runs: int = 0
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def range_s(self) -> float:
        """Length of the range in seconds."""
        return (self.end_utc - self.start_utc).total_seconds()

    @property
    def speed_x(self) -> float:
        """Audio covered per second of wall time (a multiple of real time)."""
        return self.covered_s / self.wall_s if self.wall_s > 0 else 0.0

    def same_range(self, other: ReplaySummary) -> bool:
        """True when both describe the same node and range."""
        return (self.node, self.start_utc, self.end_utc) == \
            (other.node, other.start_utc, other.end_utc)

    def add_previous(self, prev: ReplaySummary) -> None:
        """Fold in the runs before this one (a resume): counts add, lists merge."""
        self.segments_fetched += prev.segments_fetched
        self.windows_scored += prev.windows_scored
        self.clips += prev.clips
        self.clips_outside_range += prev.clips_outside_range
        self.wall_s += prev.wall_s
        self.runs += prev.runs
        seen = {d["utc_start"] for d in self.detections}
        self.detections = [d for d in prev.detections if d["utc_start"] not in seen] \
            + self.detections
        urls = {s["url"] for s in self.lost_segments}
        self.lost_segments = [s for s in prev.lost_segments if s["url"] not in urls] \
            + self.lost_segments

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict: times as ISO 8601 UTC with ``Z``."""
        doc = asdict(self)
        doc["start_utc"], doc["end_utc"] = iso_utc(self.start_utc), iso_utc(self.end_utc)
        doc["segments_failed"] = len(self.lost_segments)
        doc["speed_x"] = round(self.speed_x, 2)
        for key in ("audio_s", "gap_s", "covered_s", "wall_s"):
            doc[key] = round(doc[key], 3)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ReplaySummary:
        """Read back :meth:`to_json` (derived keys are ignored)."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in doc.items() if k in names}
        for key in ("start_utc", "end_utc"):
            values[key] = datetime.fromisoformat(str(values[key]))
        if values.get("status") not in _STATUSES:
            raise ValueError(f"unknown status {values.get('status')!r}")
        return cls(**values)

    def save(self, path: Path) -> None:
        """Write ``summary.json`` atomically (raises ``OSError``)."""
        atomic_write(path, (json.dumps(self.to_json(), indent=1) + "\n").encode("utf-8"))

    @classmethod
    def load(cls, path: Path) -> ReplaySummary | None:
        """The summary at ``path``; None when there is none or it is unreadable (logged)."""
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("%s: ignoring an unreadable replay summary: %s", path, err)
            return None

    def lines(self) -> list[str]:
        """The human-readable report, one line per item."""
        pct = 100.0 * self.audio_s / self.range_s if self.range_s else 0.0
        out = [f"replay of {self.node} {iso_utc(self.start_utc)} .. {iso_utc(self.end_utc)} "
               f"({self.range_s:.0f} s): {self.status}"
               + (f" ({self.error})" if self.error else ""),
               f"audio in the archive: {self.audio_s:.1f} s of {self.range_s:.0f} s "
               f"({pct:.1f}%), scored so far: {self.covered_s:.1f} s"]
        out.append(f"gaps in the archive: {len(self.archive_gaps)} ({self.gap_s:.1f} s)")
        for g in self.archive_gaps:
            out.append(f"  {g['utc_start']} .. {g['utc_end']} ({g['duration_s']:.1f} s) "
                       f"{g['kind']}: {g['reason']}")
        out.append(f"segments: {self.segments_planned} planned, {self.segments_fetched} "
                   f"fetched, {len(self.lost_segments)} failed")
        for s in self.lost_segments:
            out.append(f"  lost {s['utc_start']} ({s['duration_s'] or 0:.1f} s) {s['url']}: "
                       f"{s['reason']}")
        out.append(f"windows scored: {self.windows_scored}; clips: {self.clips}"
                   + (f" (+{self.clips_outside_range} outside the range, not reported)"
                      if self.clips_outside_range else ""))
        out.append(f"detections: {len(self.detections)}")
        for d in self.detections:
            out.append(f"  {d['utc_start']} .. {d['utc_end']}  confidence "
                       f"{d['confidence']:.1f}  ({d['positive_seconds']} positive seconds)")
        runs = f" over {self.runs} runs" if self.runs > 1 else ""
        out.append(f"wall time: {self.wall_s:.1f} s{runs}, {self.speed_x:.1f}x real time")
        for name, where in self.outputs.items():
            out.append(f"{name}: {where}")
        return out
