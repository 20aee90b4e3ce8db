"""The coverage ledger: which stretches of stream time were scored, and which were lost.

"Was it listening at 14:05?" must have an answer after a restart, and a miss
must be told apart from an outage. The pipeline reports each stretch of
stream time (UTC, Unix seconds) as ``scored`` or ``lost`` with a reason
(``gap``, ``backlog``, ``decode_error``, ...); the ledger merges touching
stretches of the same kind into spans, so a day of healthy listening is one
span, not 86 400 windows. Time the ledger has no span for is *unknown*: the
daemon was not running, or the stream gave no wall-clock time.

Durability: one JSON line per span change, appended and fsynced: a span is
written when it closes and, while it grows, at most every ``checkpoint_s``
(a crash loses at most that much of the open span). On load, lines with the
same kind and start are one span (the last extent wins). When the file holds
more than ``4 x`` as many lines as spans (or old spans expire after
``retention_s``) it is rewritten compacted, atomically.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Gauge

from listener.appendlog import AppendFile
from listener.atomic import atomic_write

logger = logging.getLogger(__name__)

KINDS = ("scored", "lost")
#: Stretches closer than this are one span (window hops are float sums of 1 s).
MERGE_TOLERANCE_S = 0.5


@dataclass
class Span:
    """``[start, end)`` in Unix seconds, ``scored`` or ``lost`` (with ``reason``)."""

    start: float
    end: float
    kind: str
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"start": round(self.start, 3), "end": round(self.end, 3),
                               "kind": self.kind}
        if self.reason:
            doc["reason"] = self.reason
        return doc

    @property
    def seconds(self) -> float:
        return self.end - self.start


class CoverageLedger:
    """One station's ledger, kept in ``<state_dir>/coverage-<station>.jsonl``.

    Args:
        path: the ledger file (created with its folder on the first write).
        retention_s: spans ending longer ago than this are dropped at compaction.
        checkpoint_s: how often a growing span is written while it grows.
        clock: ``time.time`` (tests pass a fake).

    ``record`` may be called from any thread.
    """

    def __init__(self, path: Path, *, retention_s: float = 30 * 86400.0,
                 checkpoint_s: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.retention_s = retention_s
        self.checkpoint_s = checkpoint_s
        self.clock = clock
        self._lock = threading.Lock()
        self._spans: list[Span] = []
        self._written_end: float | None = None  # extent of the last span on disk
        self._lines = 0
        self._file = AppendFile(self.path)  # reopened after a rotation or deletion
        self._load()

    @classmethod
    def for_station(cls, state_dir: Path, station_id: str, **kwargs: Any) -> CoverageLedger:
        return cls(Path(state_dir) / f"coverage-{station_id}.jsonl", **kwargs)

    # -- reading the file ---------------------------------------------------

    def _load(self) -> None:
        if not self.path.exists():
            return
        spans: dict[tuple[str, float], Span] = {}
        with open(self.path, "rb") as fh:
            for number, raw in enumerate(fh, 1):
                self._lines += 1
                try:
                    doc = json.loads(raw)
                    span = Span(float(doc["start"]), float(doc["end"]), str(doc["kind"]),
                                str(doc.get("reason", "")))
                    if span.kind not in KINDS or not span.end >= span.start:
                        raise ValueError(f"bad span {doc!r}")
                except (ValueError, KeyError, TypeError) as err:
                    logger.warning("%s:%d: skipping a bad coverage line (%s)",
                                   self.path, number, err)
                    continue
                key = (span.kind, span.start)
                if key not in spans or span.end > spans[key].end:
                    spans[key] = span
        self._spans = sorted(spans.values(), key=lambda s: s.start)
        if self._spans:
            self._written_end = self._spans[-1].end
        if self._lines > 4 * max(1, len(self._spans)) or self._expired():
            self.compact()

    def _expired(self) -> bool:
        return bool(self._spans) and self._spans[0].end < self.clock() - self.retention_s

    # -- recording ----------------------------------------------------------

    def record(self, start: float, end: float, kind: str, reason: str = "") -> None:
        """Add ``[start, end)`` (Unix seconds) as ``scored`` or ``lost``."""
        if kind not in KINDS:
            raise ValueError(f"coverage kind must be one of {KINDS}, got {kind!r}")
        if not end > start:
            return
        with self._lock:
            last = self._spans[-1] if self._spans else None
            if last is not None and last.kind == kind and last.reason == reason \
                    and start <= last.end + MERGE_TOLERANCE_S and end >= last.start:
                last.end = max(last.end, end)
                if last.end - (self._written_end or last.start) >= self.checkpoint_s:
                    self._append(last)
                return
            if last is not None and self._written_end != last.end:
                self._append(last)  # the span closes: its final extent
            span = Span(start, end, kind, reason)
            self._spans.append(span)
            if last is not None and start < last.start:
                self._spans.sort(key=lambda s: s.start)
            self._append(span)

    def _append(self, span: Span) -> None:
        line = json.dumps(span.to_json(), separators=(",", ":")).encode() + b"\n"
        try:
            self._file.append(line)
            self._lines += 1
            self._written_end = span.end
        except OSError as err:
            logger.warning("coverage: cannot append to %s: %s", self.path, err)
            self._close_file()
        if self._lines > 4 * max(16, len(self._spans)):
            self._compact_locked()

    def flush(self) -> None:
        """Write the open span's current extent (on shutdown)."""
        with self._lock:
            if self._spans and self._written_end != self._spans[-1].end:
                self._append(self._spans[-1])
            self._close_file()

    def compact(self) -> None:
        """Rewrite the file with one line per span, dropping expired spans."""
        with self._lock:
            self._compact_locked()

    def _compact_locked(self) -> None:
        horizon = self.clock() - self.retention_s
        self._spans = [s for s in self._spans if s.end >= horizon]
        body = b"".join(json.dumps(s.to_json(), separators=(",", ":")).encode() + b"\n"
                        for s in self._spans)
        self._close_file()
        try:
            atomic_write(self.path, body)
        except OSError as err:
            logger.warning("coverage: cannot compact %s: %s", self.path, err)
            return
        self._lines = len(self._spans)
        self._written_end = self._spans[-1].end if self._spans else None

    def _close_file(self) -> None:
        self._file.close()

    # -- queries --------------------------------------------------------------

    def spans(self, start: float, end: float) -> list[Span]:
        """The spans overlapping ``[start, end)``, clipped to it, oldest first."""
        with self._lock:
            return [Span(max(s.start, start), min(s.end, end), s.kind, s.reason)
                    for s in self._spans if s.end > start and s.start < end]

    def summary(self, start: float, end: float) -> dict[str, Any]:
        """Seconds scored, lost (by reason) and unknown within ``[start, end)``."""
        scored = 0.0
        lost: dict[str, float] = {}
        for s in self.spans(start, end):
            if s.kind == "scored":
                scored += s.seconds
            else:
                lost[s.reason or "unknown"] = lost.get(s.reason or "unknown", 0.0) + s.seconds
        total = max(0.0, end - start)
        # Overlapping spans (a restart re-scoring a stretch) must not exceed the range.
        scored = min(scored, total)
        known = min(total, scored + sum(lost.values()))
        return {"from": start, "to": end, "scored_s": round(scored, 3),
                "lost_s": {k: round(v, 3) for k, v in lost.items()},
                "unknown_s": round(total - known, 3),
                "scored_ratio": round(scored / total, 6) if total else 0.0}

    def scored_ratio(self, window_s: float = 3600.0) -> float:
        """The scored fraction of the last ``window_s`` seconds."""
        now = self.clock()
        return float(self.summary(now - window_s, now)["scored_ratio"])

    def bind_metric(self, gauge: Gauge) -> None:
        """Make ``gauge`` (``Metrics.coverage_scored_ratio``) report the last hour per scrape."""
        gauge.set_function(self.scored_ratio)
