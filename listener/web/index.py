"""The console's detection index: one station's events and reviews, kept in memory.

The detections API must not re-read the event file on every request (it grows
by a line per detection, for years). :class:`JsonlTail` follows a JSON-lines
file by byte offset: each :meth:`JsonlTail.read_new` reads only the bytes
appended since the last call, holding back a last line that has no newline
yet (a write in progress). When the path names another file (a new inode:
logrotate's ``mv`` and re-create, or a replacement written atomically), the
file is shorter than the offset, or the bytes just before the offset changed
(truncated and written again between two reads), it starts again from byte 0
and tells the caller to forget what it held: the index shows the *current* file.

:class:`DetectionIndex` keeps, per event id, the latest detection record's
summary and where that line lies in the file (the export reads the full
record back from there), ordered by timestamp for paging; a record written
twice for one id (a re-scored clip after a restart) is one detection, and the
later line wins. Reviews are followed the same way (latest per id).

Memory: a summary takes about 550 bytes (54 MB for 100,000 detections), not
the ~30 KB a parsed 8 KB record would; a first read parses one
:data:`BATCH_BYTES` batch at a time. Lines longer than :data:`MAX_LINE`
are skipped (logged), so a corrupt file cannot grow a buffer without bound.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import logging
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Longest line read (a detection record is ~8 KB); longer ones are skipped.
MAX_LINE = 1 << 20
#: At most this many bytes are parsed per read: a first read of a large file
#: holds one batch of parsed records at a time, not the whole file's.
BATCH_BYTES = 8 << 20
_TAIL = 64
#: Above this many new entries at once, sort the whole key list instead of inserting.
_BULK = 512
VERDICTS = ("yes", "no", "don't know")


@dataclass(frozen=True, slots=True)
class Line:
    """One JSON object read from the file, and where its line lies."""

    offset: int
    length: int
    doc: dict[str, Any]


class JsonlTail:
    """Follows one JSON-lines file (see the module doc). Not thread-safe: callers lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self._file_id: tuple[int, int] | None = None
        self._skipping = False  # inside a line over MAX_LINE
        self._last = b""  # the bytes just before ``offset``, to notice a rewrite
        self.bad_lines = 0
        #: Whether the last read stopped at :data:`BATCH_BYTES` with more to read.
        self.behind = False

    def read_new(self) -> tuple[bool, list[Line]]:
        """``(restarted, lines)``: whether to forget earlier lines, and the new ones."""
        try:
            fh = open(self.path, "rb")  # closed below; fstat needs it open
        except FileNotFoundError:
            restarted = self._file_id is not None
            self._reset(None)
            return restarted, []
        with fh:
            st = os.fstat(fh.fileno())
            file_id = (st.st_dev, st.st_ino)
            restarted = False
            if file_id != self._file_id or st.st_size < self.offset \
                    or not self._same_tail(fh):
                restarted = self._file_id is not None
                if restarted:
                    logger.info("%s was replaced or truncated: reading it from the start",
                                self.path)
                self._reset(file_id)
            return restarted, self._read(fh, st.st_size)

    def _reset(self, file_id: tuple[int, int] | None) -> None:
        self._file_id, self.offset, self._skipping, self._last = file_id, 0, False, b""
        self.behind = False

    def _same_tail(self, fh: Any) -> bool:
        if not self._last:
            return True
        fh.seek(self.offset - len(self._last))
        return bool(fh.read(len(self._last)) == self._last)

    def _read(self, fh: Any, size: int) -> list[Line]:
        lines: list[Line] = []
        bad = 0
        stop = self.offset + BATCH_BYTES
        while self.offset < min(size, stop):
            fh.seek(self.offset)
            # Reads of MAX_LINE: a buffer without a newline is an oversized line, or
            # (shorter) the end of the file.
            buf = fh.read(min(MAX_LINE, size - self.offset))
            end = buf.rfind(b"\n")
            if end < 0:
                if len(buf) < MAX_LINE and not self._skipping:
                    break  # the last line is still being written
                self._skipping = True  # skip a line that will not fit
                self.offset += len(buf)
                self._last = buf[-_TAIL:]
                continue
            start = 0
            if self._skipping:
                start = buf.find(b"\n") + 1
                self._skipping = False
                bad += 1
            for raw in buf[start:end].split(b"\n"):
                line = self._parse(raw, self.offset + start)
                if line is None and raw.strip():
                    bad += 1
                elif line is not None:
                    lines.append(line)
                start += len(raw) + 1
            self.offset += end + 1
            self._last = buf[max(0, end + 1 - _TAIL):end + 1]
        self.behind = self.offset < size and self.offset >= stop
        if bad:
            self.bad_lines += bad
            logger.warning("%s: skipped %d line(s) that are not JSON objects (torn or "
                           "oversized writes)", self.path, bad)
        return lines

    @staticmethod
    def _parse(raw: bytes, offset: int) -> Line | None:
        if not raw.strip():
            return None
        try:
            doc = json.loads(raw, parse_constant=_not_json)
        except ValueError:
            return None
        return Line(offset, len(raw), doc) if isinstance(doc, dict) else None


def _not_json(name: str) -> Any:
    """Python's json reads NaN and Infinity; JSON (and the console's answers) has neither."""
    raise ValueError(f"{name} is not JSON")


@dataclass(frozen=True, slots=True)
class Entry:
    """What the detections list shows of one detection, and where its record lies."""

    id: str
    timestamp: str
    confidence: float | None
    model: str | None
    label: str
    audio_name: str | None  # the file names of audioUri / imageUri (the clip folder's)
    image_name: str | None
    offset: int
    length: int


def _entry(line: Line, station: str | None) -> Entry | None:
    doc = line.doc
    event_id, ts = doc.get("id"), doc.get("timestamp")
    if doc.get("kind") != "detection" or not isinstance(event_id, str):
        return None
    named = doc.get("station")
    if station is not None and isinstance(named, dict) and named.get("id") != station:
        return None  # another station's, in an events file the fleet shares
    model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
    conf = doc.get("whaleFoundConfidence")
    # Interned: a station has a handful of model ids and labels across 100,000 records.
    return Entry(event_id, ts if isinstance(ts, str) else "",
                 float(conf) if isinstance(conf, int | float) else None,
                 sys.intern(str(doc["modelId"])) if doc.get("modelId") is not None else None,
                 sys.intern(str((model or {}).get("label") or "orca call")),
                 _name(doc.get("audioUri")), _name(doc.get("imageUri")), line.offset,
                 line.length)


def _name(uri: Any) -> str | None:
    return uri.rsplit("/", 1)[-1] if isinstance(uri, str) else None


class DetectionIndex:
    """One station's detections (de-duplicated by id) and latest reviews.

    With ``station`` set, records naming another station are skipped: stations
    of a fleet may share one events file (and so its reviews file).

    Every public method first reads what was appended to either file since the
    last call, so answers are current without re-reading the files. Methods
    are thread-safe (the console calls them from worker threads).
    """

    def __init__(self, events_path: Path | None, reviews_path: Path | None,
                 station: str | None = None) -> None:
        self.events_path = events_path
        #: Detections of other stations are skipped (``None``: every station's).
        self.station = station
        self._events = JsonlTail(events_path) if events_path is not None else None
        self._reviews = JsonlTail(reviews_path) if reviews_path is not None else None
        self._lock = threading.Lock()
        self._by_id: dict[str, Entry] = {}
        self._keys: list[tuple[str, str]] = []  # (timestamp, id), ascending
        self._review: dict[str, dict[str, Any]] = {}

    # -- keeping up -----------------------------------------------------------

    def _refresh(self) -> None:
        if self._events is not None:
            behind = True
            while behind:  # batch by batch: parsed records are dropped as they are indexed
                restarted, lines = self._events.read_new()
                if restarted:
                    self._by_id.clear()
                    self._keys.clear()
                self._add([e for line in lines
                           if (e := _entry(line, self.station)) is not None])
                behind = self._events.behind
        if self._reviews is not None:
            behind = True
            while behind:  # a reviews file over BATCH_BYTES is read to its end too
                restarted, lines = self._reviews.read_new()
                if restarted:
                    self._review.clear()
                for line in lines:
                    doc = line.doc
                    if isinstance(doc.get("id"), str) and doc.get("SRKWFound") in VERDICTS:
                        self._review[doc["id"]] = doc
                behind = self._reviews.behind

    def _add(self, entries: list[Entry]) -> None:
        bulk = len(entries) > _BULK
        for entry in entries:
            old = self._by_id.get(entry.id)
            self._by_id[entry.id] = entry
            if old is not None and old.timestamp == entry.timestamp:
                continue  # same place in the order: the record alone is replaced
            if not bulk:
                if old is not None:
                    del self._keys[bisect.bisect_left(self._keys, (old.timestamp, old.id))]
                bisect.insort(self._keys, (entry.timestamp, entry.id))
        if bulk:
            self._keys = sorted((e.timestamp, e.id) for e in self._by_id.values())

    # -- answers --------------------------------------------------------------

    def get(self, event_id: str) -> Entry | None:
        """The detection with this id, if the event file holds one."""
        with self._lock:
            self._refresh()
            return self._by_id.get(event_id)

    def review(self, event_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._review.get(event_id)

    def matching(self, date: str = "", reviewed: str = "any") -> list[tuple[str, str]]:
        """``(timestamp, id)`` keys, newest first, on UTC ``date`` and in the ``reviewed``
        state (``any``, ``yes``, ``no``)."""
        with self._lock:
            self._refresh()
            keys = self._keys
            if date:
                lo = bisect.bisect_left(keys, (date, ""))
                hi = bisect.bisect_left(keys, (date + "\U0010ffff", ""))
                keys = keys[lo:hi]
            if reviewed != "any":
                want = reviewed == "yes"
                keys = [k for k in keys if (k[1] in self._review) == want]
            return keys[::-1]

    def count_on(self, date: str) -> int:
        """How many detections on UTC ``date`` (``YYYY-MM-DD``)."""
        with self._lock:
            self._refresh()
            return bisect.bisect_left(self._keys, (date + "\U0010ffff", "")) \
                - bisect.bisect_left(self._keys, (date, ""))

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._by_id)

    def entries(self, ids: Iterable[str]) -> list[tuple[Entry, dict[str, Any] | None]]:
        """The entries (with their reviews) for ``ids`` that are still held."""
        with self._lock:
            return [(self._by_id[i], self._review.get(i)) for i in ids if i in self._by_id]

    def reviewed_records(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """``(full detection record, latest review)`` for each reviewed detection, read
        back from the event file at each record's offset."""
        with self._lock:
            self._refresh()
            wanted = sorted((e.offset, e.length, e.id) for i, e in self._by_id.items()
                            if i in self._review)
            if not wanted or self.events_path is None:
                return []
            out = []
            with open(self.events_path, "rb") as fh:
                for offset, length, event_id in wanted:
                    fh.seek(offset)
                    try:
                        doc = json.loads(fh.read(length))
                    except ValueError:
                        continue  # replaced since the refresh above; the next one re-reads
                    if isinstance(doc, dict) and doc.get("id") == event_id:
                        out.append((doc, self._review[event_id]))
            return out


def _tagged(station: str, keys: list[tuple[str, str]]) -> Iterator[tuple[str, str, str]]:
    return ((ts, event_id, station) for ts, event_id in keys)


def newest_first(per_station: dict[str, list[tuple[str, str]]], offset: int,
                 limit: int) -> list[tuple[str, str]]:
    """``(station, id)`` of the page ``[offset, offset + limit)`` of several stations'
    newest-first key lists, merged newest first."""
    streams = [_tagged(station, keys) for station, keys in per_station.items()]
    merged = heapq.merge(*streams, key=lambda k: (k[0], k[1]), reverse=True)
    return [(station, event_id)
            for _, event_id, station in itertools.islice(merged, offset, offset + limit)]
