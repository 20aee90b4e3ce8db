"""The object-store side of ``listener replay``: which archived segments cover a range.

Orcasound keeps every stream a node ever sent under ``<node>/hls/<unix_ts>/``
(folder name = unix time the stream started; its ``live.m3u8`` lists every
segment since). Planning the replay of [start, end) takes three steps, all
blocking HTTP GETs through :class:`~listener.sources.http_client.HttpClient`:

1. :func:`list_folders`: the node's folders, by S3 ListObjectsV2 (anonymous,
   paginated, XML parsed with entity declarations refused);
2. :func:`select_folders`: the folders overlapping the range;
3. :func:`plan_segments`: walk one folder's playlist, keep the segments that
   overlap the range (plus one warm-up segment before them) and report what
   is missing as :class:`ArchiveGap` records. :func:`plan_range` does it all.

Time: segments carry ``stream_start_utc`` = the folder's unix time and
``offset_s`` = the sum of the EXTINF durations listed before them, exactly as
the live :class:`~listener.sources.orcasound.OrcasoundSource` does, so the same audio
gets the same timestamps (the pipeline applies ``ffmpeg_start_offset_s`` to
both). One addition: where the segment numbers jump (``live010.ts`` then
``live012.ts``) the missing segments did play, so later offsets also advance
by their estimated length (missing count x median listed EXTINF); so do
names missing before the first listed one (a stream starts at ``live000.ts``).
"""

from __future__ import annotations

import itertools
import logging
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

from listener.errors import FetchError, ListenerError, PlaylistError
from listener.replay.bucket import (  # noqa: F401  (re-exported: the archive's public API)
    S3_NAMESPACE,
    BucketLocation,
    _check_node,
    bucket_location,
    list_folders,
)
from listener.sources.http_client import HttpClient
from listener.sources.playlist import PlaylistEntry, parse_media_playlist
from listener.sources.segments import Segment

log = logging.getLogger(__name__)

_SEGMENT_NUMBER = re.compile(r"live(\d+)\.ts$")
# Gaps shorter than this are float rounding, not missing audio.
_MIN_GAP_S = 1e-3

GapKind = Literal["missing_playlist", "unreadable_playlist", "empty_playlist",
                  "sequence_jump", "between_folders", "before_first_folder",
                  "after_last_segment"]


@dataclass(frozen=True)
class ArchiveSegment(Segment):
    """A :class:`~listener.sources.segments.Segment` planned for a replay.

    ``warmup`` marks the segment just before the range: decode it to prime the
    AAC decoder, then drop its audio (it is outside the range).
    """

    warmup: bool = False


@dataclass(frozen=True)
class ArchiveGap:
    """Audio inside the range that the archive does not hold, clipped to the range.

    ``from_sequence``/``to_sequence`` name the missing segment numbers when
    known (a number jump); ``stream_key`` is None for time no folder covers.
    """

    kind: GapKind
    start_utc: datetime
    end_utc: datetime
    reason: str
    stream_key: str | None = None
    from_sequence: int | None = None
    to_sequence: int | None = None

    @property
    def duration_s(self) -> float:
        """Length of the gap in seconds."""
        return (self.end_utc - self.start_utc).total_seconds()


class NoArchiveAudio(ListenerError):
    """The archive holds no audio in the range; ``gaps`` say where the time went."""

    def __init__(self, message: str, gaps: list[ArchiveGap]) -> None:
        super().__init__(message)
        self.gaps = gaps


@dataclass(frozen=True)
class FolderPlan:
    """What one stream folder contributes to a range.

    ``segments`` are in playlist order (a warm-up first, if any);
    ``audio_s`` counts the in-range seconds of the non-warm-up ones;
    ``audio_end_utc`` is where the folder's last listed segment ends (None
    when its playlist is missing or unreadable).
    """

    folder: int
    stream_key: str
    playlist_url: str
    stream_start_utc: datetime
    segments: list[ArchiveSegment]
    gaps: list[ArchiveGap]
    audio_s: float
    audio_end_utc: datetime | None


@dataclass(frozen=True)
class RangePlan:
    """Everything a replay of [start_utc, end_utc) fetches and reports.

    ``segments`` and ``gaps`` are in time order (folder by folder); ``audio_s``
    is the archived audio inside the range, warm-ups excluded.
    """

    node: str
    start_utc: datetime
    end_utc: datetime
    folders: list[FolderPlan]
    segments: list[ArchiveSegment]
    gaps: list[ArchiveGap]
    audio_s: float

    @property
    def gap_s(self) -> float:
        """Seconds of the range the archive has no audio for."""
        return sum(g.duration_s for g in self.gaps)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _iso(value: datetime | float) -> str:
    when = _utc(value) if isinstance(value, int | float) else value.astimezone(UTC)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def _check_range(start_utc: datetime, end_utc: datetime) -> tuple[float, float]:
    """The range as unix seconds; ValueError for naive or empty ranges."""
    for name, value in (("start", start_utc), ("end", end_utc)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"the {name} time {value.isoformat()} has no time zone; "
                             "give one, e.g. 2020-07-07T19:30:00Z or ...-07:00")
    if end_utc <= start_utc:
        raise ValueError(f"empty time range: the end {_iso(end_utc)} is not after "
                         f"the start {_iso(start_utc)}")
    return start_utc.timestamp(), end_utc.timestamp()


def select_folders(folders: Iterable[int], start_utc: datetime, end_utc: datetime) -> list[int]:
    """The folders overlapping [start, end), ascending.

    That is every folder starting inside the range, plus the last one that
    started before it (it holds the range's start, if it still ran then).
    """
    start, end = _check_range(start_utc, end_utc)
    ordered = sorted(set(folders))
    before = [f for f in ordered if f < start]
    return before[-1:] + [f for f in ordered if start <= f < end]


def _number(entry: PlaylistEntry) -> int | None:
    """The number in an Orcasound ``liveNNN.ts`` name, None for other names."""
    match = _SEGMENT_NUMBER.search(urlsplit(entry.url).path)
    return int(match.group(1)) if match else None


def _gap(lo: float, hi: float, rng: tuple[float, float], kind: GapKind, reason: str,
         key: str | None = None, seqs: tuple[int, int] | None = None) -> list[ArchiveGap]:
    """[lo, hi) clipped to the range, as a one-item list (empty if nothing is left)."""
    lo, hi = max(lo, rng[0]), min(hi, rng[1])
    if hi - lo < _MIN_GAP_S:
        return []
    first, last = seqs if seqs else (None, None)
    return [ArchiveGap(kind, _utc(lo), _utc(hi), reason, key, first, last)]


_Step = tuple[int, PlaylistEntry, float, bool]  # (sequence, entry, offset_s, after a jump)


def _timeline(entries: tuple[PlaylistEntry, ...], key: str, t0: float,
              rng: tuple[float, float]) -> tuple[list[_Step], list[ArchiveGap], float]:
    """Each entry's sequence and offset, the number-jump gaps, and the stream length.

    Offsets are EXTINF sums plus, at a jump, the estimated length of the
    unlisted segments (they played; only the listing lost them).
    """
    gaps: list[ArchiveGap] = []
    typical_s = statistics.median(e.duration_s for e in entries)
    timeline: list[_Step] = []
    # Orcasound names count from live000.ts, so a first name above it is a jump too.
    offset, previous = 0.0, (-1 if _number(entries[0]) is not None else None)
    for entry in entries:
        number = _number(entry)
        seq = entry.sequence if number is None else number
        jump = previous is not None and seq > previous + 1
        if previous is not None and seq <= previous:
            log.warning("%s: segment number %d follows %d; keeping playlist order", key, seq,
                        previous)
        elif jump and previous is not None:
            missing_s = (seq - previous - 1) * typical_s
            names = f"live{previous + 1:03d}.ts" + (
                f" to live{seq - 1:03d}.ts" if seq - previous > 2 else "")
            gaps += _gap(t0 + offset, t0 + offset + missing_s, rng, "sequence_jump",
                         f"{key}: playlist skips {names} (about {missing_s:.1f} s)", key,
                         (previous + 1, seq - 1))
            offset += missing_s
        timeline.append((seq, entry, offset, jump))
        offset += entry.duration_s
        previous = seq
    return timeline, gaps, offset


def _chosen_segments(timeline: list[_Step], key: str, t0: float,
                     rng: tuple[float, float]) -> list[ArchiveSegment]:
    """The timeline's segments overlapping the range, after one warm-up segment."""
    chosen = [i for i, (_, e, off, _) in enumerate(timeline)
              if t0 + off < rng[1] and t0 + off + e.duration_s > rng[0]]
    if chosen and chosen[0] > 0 and not timeline[chosen[0]][3]:
        chosen.insert(0, chosen[0] - 1)  # contiguous predecessor primes the decoder
    out = []
    for n, i in enumerate(chosen):
        seq, entry, off, jump = timeline[i]
        out.append(ArchiveSegment(
            stream_key=key, sequence=seq, url=entry.url, duration_s=entry.duration_s,
            stream_start_utc=_utc(t0), offset_s=off, program_date_time=None,
            discontinuity=n == 0 or jump or entry.discontinuity,
            warmup=t0 + off + entry.duration_s <= rng[0]))
    return out


def plan_segments(client: HttpClient, base_url: str, node: str, folder: int,
                  start_utc: datetime, end_utc: datetime, *,
                  next_folder: int | None = None) -> FolderPlan:
    """Walk one folder's playlist and plan its part of [start, end).

    Args:
        next_folder: the node's next folder, whose start ends this one's
            stretch of the timeline; None = this is the last folder, so the
            time after its audio up to ``end_utc`` is reported as a gap.

    Raises:
        FetchError: the playlist fetch failed other than by HTTP 404.
    """
    rng = _check_range(start_utc, end_utc)
    _check_node(node)
    key = f"{node}/hls/{folder}"
    url = f"{base_url.rstrip('/')}/{key}/live.m3u8"
    t0 = float(folder)
    stretch_end = rng[1] if next_folder is None else float(next_folder)
    segments: list[ArchiveSegment] = []
    gaps: list[ArchiveGap] = []

    def plan(audio_end: float | None) -> FolderPlan:
        audio = sum(min(s.offset_s + s.duration_s + t0, rng[1]) - max(s.offset_s + t0, rng[0])
                    for s in segments if not s.warmup)
        return FolderPlan(folder, key, url, _utc(t0), segments, gaps, audio,
                          None if audio_end is None else _utc(audio_end))

    try:
        entries = parse_media_playlist(client.get(url, "playlist"), url).entries
    except (FetchError, PlaylistError) as err:
        if isinstance(err, FetchError) and err.status != 404:
            raise  # transient or forbidden: the replay should fail, not skip audio
        kind: GapKind = "missing_playlist" if isinstance(err, FetchError) \
            else "unreadable_playlist"
        log.warning("%s: no usable playlist, the whole stream is a gap: %s", key, err)
        gaps += _gap(t0, stretch_end, rng, kind, f"no usable playlist for {key}: {err}", key)
        return plan(None)
    if not entries:
        gaps += _gap(t0, stretch_end, rng, "empty_playlist", f"{key}: empty playlist", key)
        return plan(t0)

    timeline, jump_gaps, length_s = _timeline(entries, key, t0, rng)
    gaps += jump_gaps
    audio_end = t0 + length_s

    segments += _chosen_segments(timeline, key, t0, rng)
    kind = "after_last_segment" if next_folder is None else "between_folders"
    after = "the next stream starts" if next_folder is not None else "the range ends"
    gaps += _gap(audio_end, stretch_end, rng, kind, f"{key} ends at {_iso(audio_end)}; "
                 f"no audio until {after}", key)
    if next_folder is not None and audio_end > stretch_end + _MIN_GAP_S:
        log.info("%s: audio runs %.1f s past the next stream's start", key,
                 audio_end - stretch_end)
    return plan(audio_end)


def plan_range(client: HttpClient, base_url: str, node: str, start_utc: datetime,
               end_utc: datetime) -> RangePlan:
    """Plan the replay of [start, end): folders, segments and gaps, in time order.

    Raises:
        ValueError: the range is empty or its times have no time zone.
        NoArchiveAudio: no audio in the archive for the range (a ListenerError).
        ListenerError: the node is unknown.
        FetchError: listing or a playlist fetch failed (other than a 404 playlist).
    """
    rng = _check_range(start_utc, end_utc)
    folders = list_folders(client, base_url, node)
    chosen = select_folders(folders, start_utc, end_utc)
    span = f"no audio in the archive for {node} between {_iso(start_utc)} and {_iso(end_utc)}"
    if not chosen:
        why = f"its first stream folder starts at {_iso(folders[0])}"
        raise NoArchiveAudio(f"{span}: {why}", _gap(rng[0], rng[1], rng, "before_first_folder",
                                                    f"{node} has no stream before "
                                                    f"{_iso(folders[0])}"))
    gaps = _gap(rng[0], chosen[0], rng, "before_first_folder",
                f"{node} has no stream before {_iso(chosen[0])}")
    following = dict(itertools.pairwise(folders))
    plans = [plan_segments(client, base_url, node, f, start_utc, end_utc,
                           next_folder=following.get(f))
             for f in chosen]
    segments = [s for p in plans for s in p.segments]
    gaps += [g for p in plans for g in p.gaps]
    gaps.sort(key=lambda g: g.start_utc)
    if not any(not s.warmup for s in segments):
        detail = "; ".join(g.reason for g in gaps) or "no segment overlaps it"
        raise NoArchiveAudio(f"{span} ({detail})", gaps)
    audio_s = sum(p.audio_s for p in plans)
    log.info("%s %s..%s: %d folders, %d segments, %.0f s of audio, %d gaps (%.0f s)", node,
             _iso(start_utc), _iso(end_utc), len(plans), len(segments), audio_s, len(gaps),
             sum(g.duration_s for g in gaps))
    return RangePlan(node, start_utc, end_utc, plans, segments, gaps, audio_s)
