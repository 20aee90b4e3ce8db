"""Segment, gap and position records, and the sequence tracking behind them.

:class:`StreamTracker` is the pure part of following a playlist: given each
new :class:`~listener.sources.playlist.MediaPlaylist` of one stream it returns the
segments not yet yielded, in order, with their stream offsets, and a
:class:`Gap` for every sequence number that will never be yielded. No I/O
here, so every rule can be tested on hand-written playlists.

Time: ``offset_s`` is the sum of the EXTINF durations of the earlier segments
of the stream. With a playlist that lists the whole stream (Orcasound, media
sequence 0) it is exact to the EXTINF rounding. With a sliding window it
counts from the first segment this tracker saw; across a gap (segments that
left the window unseen) it is re-anchored on EXT-X-PROGRAM-DATE-TIME when
both sides have one, else advanced by the number of missed segments times the
mean listed EXTINF (an estimate; the next segment is marked discontinuous).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from listener.sources.playlist import MediaPlaylist, PlaylistEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Position:
    """The last segment already processed; persisted so a restart can resume."""

    stream_key: str
    sequence: int


@dataclass(frozen=True)
class Segment:
    """One media segment to fetch and decode.

    Attributes:
        stream_key: Orcasound: ``<node>/hls/<unix_ts>``; generic HLS: the
            configured playlist URL.
        sequence: media sequence number.
        url: absolute URL of the segment.
        duration_s: its EXTINF duration.
        stream_start_utc: Orcasound: the folder's unix time. Generic HLS
            without program date-time: an estimate from the wall clock.
        offset_s: position of its first sample in the stream (sum of earlier
            EXTINF durations; see the module docstring).
        program_date_time: EXT-X-PROGRAM-DATE-TIME of the segment if given.
        discontinuity: do not join its audio to the previous segment's
            (EXT-X-DISCONTINUITY, first segment after a stream change, a gap,
            or a fresh start).
    """

    stream_key: str
    sequence: int
    url: str
    duration_s: float
    stream_start_utc: datetime | None
    offset_s: float
    program_date_time: datetime | None = None
    discontinuity: bool = False

    @property
    def utc_start(self) -> datetime | None:
        """Wall-clock time of the first sample, or None when nothing anchors it."""
        if self.program_date_time is not None:
            return self.program_date_time
        if self.stream_start_utc is None:
            return None
        return self.stream_start_utc + timedelta(seconds=self.offset_s)

    @property
    def utc_end(self) -> datetime | None:
        """Wall-clock time just after its last sample."""
        start = self.utc_start
        return None if start is None else start + timedelta(seconds=self.duration_s)

    @property
    def position(self) -> Position:
        """The :class:`Position` to persist once this segment is processed."""
        return Position(self.stream_key, self.sequence)


@dataclass(frozen=True)
class Gap:
    """Sequence numbers ``from_sequence..to_sequence`` (inclusive) that will not come.

    ``utc_start`` and ``duration_s`` are approximate and None when unknown;
    ``url`` names the segment when a single fetch failed.
    """

    stream_key: str
    from_sequence: int
    to_sequence: int
    reason: str
    utc_start: datetime | None = None
    duration_s: float | None = None
    url: str | None = None

    @property
    def count(self) -> int:
        """How many segments are missing."""
        return self.to_sequence - self.from_sequence + 1


# After this many polls in a row whose newest sequence is older than what we
# already yielded, believe the stream restarted (a stale CDN copy lasts less).
_BACKWARDS_POLLS = 3


class StreamTracker:
    """Turns successive playlists of one stream into new segments and gaps.

    Args:
        stream_key: the key stamped on every record.
        stream_start_utc: anchor for ``utc_start`` when there is no PDT.
        restarts: a playlist that stays shorter than what was yielded for
            ``_BACKWARDS_POLLS`` polls means the stream restarted (generic
            HLS). False (Orcasound): it is only ever a stale copy, waited out.
    """

    def __init__(self, stream_key: str, stream_start_utc: datetime | None = None, *,
                 restarts: bool = True) -> None:
        self.stream_key = stream_key
        self.stream_start_utc = stream_start_utc
        # False for Orcasound: a folder's playlist only grows and offsets are
        # absolute from segment 0, so a shorter copy is always a stale one.
        self._restarts = restarts
        self.next_sequence: int | None = None
        self._next_offset_s = 0.0
        self._last_end_pdt: datetime | None = None
        self._pending_discontinuity = True
        self._backwards = 0

    @property
    def started(self) -> bool:
        """True once :meth:`start` chose where to begin."""
        return self.next_sequence is not None

    def start(self, playlist: MediaPlaylist, resume_sequence: int | None, back: int,
              max_backlog_s: float | None = None, reason_prefix: str = "") -> Gap | None:
        """Choose the first sequence to yield from this playlist.

        ``resume_sequence`` is the last processed sequence of this stream (or
        None). It resumes right after it when that is still listed (or is the
        one just before the window) and the listed backlog after it is at most
        ``max_backlog_s``; else starts ``back`` segments before the live edge
        and returns the :class:`Gap` of what a resume point missed.
        """
        first, last = playlist.media_sequence, playlist.last_sequence
        edge_start = max(first, last + 1 - back)
        start, gap_reason = edge_start, ""
        if resume_sequence is not None:
            if first - 1 <= resume_sequence <= last:
                backlog = sum(e.duration_s for e in playlist.entries
                              if e.sequence > resume_sequence)
                if max_backlog_s is None or backlog <= max_backlog_s:
                    start = resume_sequence + 1
                else:
                    # Never back before the resume point: those are processed.
                    start = max(edge_start, resume_sequence + 1)
                    gap_reason = (f"resume point is {backlog:.0f} s behind the live edge "
                                  f"(more than max_resume_backlog_s={max_backlog_s:g})")
            elif resume_sequence < first - 1:
                gap_reason = "resume point is no longer listed in the playlist"
            else:
                log.warning("%s: resume sequence %d is ahead of the playlist (newest %d); "
                            "starting at the live edge", self.stream_key, resume_sequence, last)
        gap = None
        if gap_reason and resume_sequence is not None and start > resume_sequence + 1:
            gap = self._gap(playlist, resume_sequence + 1, start - 1, reason_prefix + gap_reason,
                            self._offset_of(playlist, resume_sequence + 1))
        self._set_start(playlist, start)
        # Only a seamless resume continues the audio the caller already has.
        self._pending_discontinuity = resume_sequence is None or start != resume_sequence + 1
        return gap

    def _set_start(self, playlist: MediaPlaylist, start: int) -> None:
        # Offsets count from the first listed entry; for a playlist that lists
        # the whole stream (media sequence 0) that is the stream start.
        self.next_sequence = start
        self._next_offset_s = sum(e.duration_s for e in playlist.entries if e.sequence < start)
        before = playlist.entry(start - 1)
        if before is not None and before.program_date_time is not None:
            self._last_end_pdt = before.program_date_time + timedelta(seconds=before.duration_s)

    def mark_discontinuity(self) -> None:
        """The next yielded segment must not be joined to what came before."""
        self._pending_discontinuity = True

    def advance(self, playlist: MediaPlaylist,
                now: datetime | None = None) -> list[Segment | Gap]:
        """New records from a fresh copy of the playlist, in sequence order.

        ``now``: the wall clock, given where ``stream_start_utc`` is an
        estimate from it (generic HLS without program date-time): after a
        restart it is estimated again so the newest listed segment ends at
        ``now``, as at start-up, since the outage's length is unknown.
        """
        if self.next_sequence is None:
            raise RuntimeError("StreamTracker.advance() before start()")
        out: list[Segment | Gap] = []
        first, last = playlist.media_sequence, playlist.last_sequence
        if last < self.next_sequence - 1:
            self._backwards += 1
            if self._backwards < _BACKWARDS_POLLS:
                return out  # probably a stale cached copy; wait for a fresh one
            if not self._restarts:
                if self._backwards == _BACKWARDS_POLLS:
                    log.warning("%s: the playlist lists only up to sequence %d, behind the "
                                "%d already followed, for %d polls; waiting for it to catch "
                                "up (its offsets count from segment 0)", self.stream_key,
                                last, self.next_sequence - 1, self._backwards)
                return out
            self._restart(playlist, self.next_sequence - 1, now)
        self._backwards = 0
        if self.next_sequence < first:
            gap = self._gap(playlist, self.next_sequence, first - 1,
                            "fell out of the playlist window before it was fetched",
                            self._next_offset_s)
            out.append(gap)
            self._next_offset_s += gap.duration_s or 0.0
            self.next_sequence = first
            self._pending_discontinuity = True
        offset = self._next_offset_s
        for entry in playlist.entries[max(0, self.next_sequence - first):]:
            if entry.error is not None:
                out.append(self._bad_entry(entry, offset))
            else:
                out.append(Segment(
                    stream_key=self.stream_key, sequence=entry.sequence, url=entry.url,
                    duration_s=entry.duration_s, stream_start_utc=self.stream_start_utc,
                    offset_s=offset, program_date_time=entry.program_date_time,
                    discontinuity=entry.discontinuity or self._pending_discontinuity,
                ))
                self._pending_discontinuity = False
            offset += entry.duration_s
            if entry.program_date_time is not None:
                self._last_end_pdt = entry.program_date_time + timedelta(
                    seconds=entry.duration_s)
        self._next_offset_s = offset
        self.next_sequence = max(self.next_sequence, last + 1)
        return out

    def _restart(self, playlist: MediaPlaylist, last_yielded: int,
                 now: datetime | None) -> None:
        log.warning("%s: media sequence went back from %d to %d; the stream restarted",
                    self.stream_key, last_yielded, playlist.last_sequence)
        # Offsets keep accumulating (they count audio received); only the
        # clock estimate, which they are added to, is taken again.
        self.next_sequence = playlist.media_sequence
        self._last_end_pdt = None
        self._pending_discontinuity = True
        if now is not None and self.stream_start_utc is not None:
            self.stream_start_utc = now - timedelta(seconds=self.live_edge_offset_s(playlist))
            log.warning("%s: without program date-time, the newest listed segment is taken "
                        "to end now (%s) again", self.stream_key,
                        now.isoformat(timespec="seconds"))

    def _bad_entry(self, entry: PlaylistEntry, offset_s: float) -> Gap:
        """A malformed playlist entry: lost, but its sequence (and time) is kept."""
        self._pending_discontinuity = True
        utc = entry.program_date_time
        if utc is None and self.stream_start_utc is not None:
            utc = self.stream_start_utc + timedelta(seconds=offset_s)
        return Gap(self.stream_key, entry.sequence, entry.sequence,
                   f"bad playlist entry: {entry.error}", utc,
                   entry.duration_s if entry.duration_s > 0 else None, entry.url or None)

    def _gap(self, playlist: MediaPlaylist, first_missing: int, last_missing: int,
             reason: str, offset_s: float) -> Gap:
        """A Gap with the best time estimate we have for the missing range."""
        listed = [e for e in playlist.entries if first_missing <= e.sequence <= last_missing]
        unlisted = (last_missing - first_missing + 1) - len(listed)
        duration = sum(e.duration_s for e in listed)
        after = playlist.entry(last_missing + 1)
        if unlisted and self._last_end_pdt is not None and after is not None \
                and after.program_date_time is not None:
            # Re-anchor on PDT: the missing stretch is what the clock says.
            duration = (after.program_date_time - self._last_end_pdt).total_seconds()
            duration = max(duration, 0.0)
        elif unlisted:
            # The mean listed EXTINF beats the target duration (an upper bound).
            durations = [e.duration_s for e in playlist.entries]
            typical = (sum(durations) / len(durations) if durations
                       else playlist.target_duration_s or 0.0)
            duration += unlisted * typical
        utc: datetime | None = None
        if listed and listed[0].program_date_time is not None:
            utc = listed[0].program_date_time
        elif self._last_end_pdt is not None:
            utc = self._last_end_pdt
        elif self.stream_start_utc is not None:
            utc = self.stream_start_utc + timedelta(seconds=offset_s)
        return Gap(self.stream_key, first_missing, last_missing, reason, utc,
                   duration if duration > 0 else None)

    def _offset_of(self, playlist: MediaPlaylist, sequence: int) -> float:
        return sum(e.duration_s for e in playlist.entries if e.sequence < sequence)

    def live_edge_offset_s(self, playlist: MediaPlaylist) -> float:
        """Stream offset where the newest listed segment ends."""
        if self.next_sequence is None:
            return sum(e.duration_s for e in playlist.entries)
        skip = max(0, self.next_sequence - playlist.media_sequence)
        ahead = sum(e.duration_s for e in playlist.entries[skip:])
        return self._next_offset_s + ahead
