"""HLS playlist parsing (pure functions over text; master playlists via ``m3u8``).

Media playlists are read by :class:`MediaPlaylistParser`, line by line and
incrementally (a live playlist only grows: only appended lines are read
again). It is tolerant of what real encoders write (ffmpeg's segment muxer,
as Orcasound uses it: ``#EXT-X-ALLOW-CACHE``, no ``#EXT-X-ENDLIST`` while
live, no program date-time) and tolerant per entry: a URI whose duration is
missing, negative, not finite or absurd, or that is not http(s), is kept as
an entry with ``error`` set, which the tracker turns into a recorded Gap;
the rest of the playlist is still followed. A bad header (no ``#EXTM3U``,
not UTF-8, a bad media sequence) raises :class:`~listener.errors.PlaylistError`
naming the playlist URL.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit

import m3u8

from listener.errors import PlaylistError
from listener.numerals import ascii_int

# Codec prefixes (RFC 6381 as used in CODECS=) that carry only audio.
_AUDIO_CODECS = ("mp4a", "ac-3", "ec-3", "opus", "flac", "mp3", ".mp3", "alac")

# A single EXTINF longer than this is not a live segment; it is garbage.
_MAX_SEGMENT_S = 3600.0


@dataclass(frozen=True)
class PlaylistEntry:
    """One ``#EXTINF`` segment as listed, before any stream tracking."""

    sequence: int
    url: str
    duration_s: float
    discontinuity: bool = False
    program_date_time: datetime | None = None
    #: Why this entry cannot be fetched (bad or missing EXTINF, bad URI);
    #: None for a good entry. A bad entry keeps its sequence number and an
    #: estimated ``duration_s`` so later offsets stay right.
    error: str | None = None


@dataclass(frozen=True)
class MediaPlaylist:
    """A parsed media playlist.

    ``entries[i].sequence == media_sequence + i``. ``program_date_time`` of an
    entry is the tag's value carried forward by the EXTINF durations (as the
    HLS spec defines it), or None when the playlist has no such tag before it.
    """

    url: str
    media_sequence: int
    target_duration_s: float | None
    endlist: bool
    entries: tuple[PlaylistEntry, ...]

    @property
    def last_sequence(self) -> int:
        """Sequence number of the newest entry (``media_sequence - 1`` if empty)."""
        return self.media_sequence + len(self.entries) - 1

    def entry(self, sequence: int) -> PlaylistEntry | None:
        """The entry with this media sequence number, if listed."""
        index = sequence - self.media_sequence
        if 0 <= index < len(self.entries):
            return self.entries[index]
        return None


@dataclass(frozen=True)
class Variant:
    """An ``#EXT-X-STREAM-INF`` variant of a master playlist."""

    url: str
    bandwidth: int
    codecs: str | None
    audio_group: str | None


@dataclass(frozen=True)
class AudioRendition:
    """An ``#EXT-X-MEDIA:TYPE=AUDIO`` rendition that has its own playlist."""

    url: str
    group_id: str
    name: str
    default: bool
    autoselect: bool


@dataclass(frozen=True)
class MasterPlaylist:
    """A parsed master (multivariant) playlist."""

    url: str
    variants: tuple[Variant, ...]
    audio_renditions: tuple[AudioRendition, ...]


def _absolute(base_url: str, ref: str, playlist_url: str) -> str:
    try:
        url = urljoin(base_url, ref.strip())
        scheme = urlsplit(url).scheme
    except ValueError as err:  # e.g. "http://[::1/x": an unclosed IPv6 address
        raise PlaylistError(f"{playlist_url}: refers to a malformed URL {ref[:80]!r}: "
                            f"{err}") from err
    if scheme not in ("http", "https"):
        raise PlaylistError(f"{playlist_url}: refers to a non-http(s) URL {ref!r}")
    return url


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    # A date-time without a zone is taken as UTC: the spec requires a zone,
    # and UTC is what every encoder we know writes.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _load(text: str | bytes, url: str) -> dict[str, Any]:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise PlaylistError(f"{url}: playlist is not UTF-8 text: {err}") from err
    text = text.lstrip("\ufeff \t\r\n")
    if not text.startswith("#EXTM3U"):
        head = text[:40]
        raise PlaylistError(f"{url}: not an HLS playlist (no #EXTM3U header; starts {head!r})")
    try:
        return m3u8.parse(text)  # type: ignore[no-any-return]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError,
            m3u8.ParseError) as err:  # ArithmeticError: BANDWIDTH=INFINITY, int(inf)
        raise PlaylistError(f"{url}: malformed playlist: {err}") from err


@dataclass
class _ParseState:
    """Where a media playlist parse stands after the lines read so far."""

    sequence: int = 0
    media_sequence: int = 0
    target_s: float | None = None
    endlist: bool = False
    seen_entry: bool = False
    extinf: float | str | None = None  # float, or why the pending #EXTINF is bad
    discontinuity: bool = False
    pdt: datetime | None = None
    valid_s: float = 0.0
    valid_n: int = 0
    listed: dict[str, int] = field(default_factory=dict)  # URL -> first sequence

    def estimate_s(self) -> float:
        """Duration to book for an entry whose own is unknown (mean listed EXTINF)."""
        if self.valid_n:
            return self.valid_s / self.valid_n
        return self.target_s or 0.0


def _extinf(value: str) -> float | str:
    text = value.split(",", 1)[0].strip()
    try:
        duration = float(text)
    except ValueError:
        return f"bad EXTINF duration {text[:40]!r}"
    if not math.isfinite(duration) or duration < 0 or duration > _MAX_SEGMENT_S:
        return f"bad EXTINF duration {text[:40]!r}"
    return duration


_PDT_YEARS = range(1970, 3000)


def _pdt(value: str) -> datetime | None:
    """A program date-time, or None when unreadable or outside 1970-2999 (a broken
    encoder clock, and near year 9999 adding a segment's duration overflows)."""
    try:
        when = _utc(datetime.fromisoformat(value.strip()))
    except (ValueError, OverflowError):
        return None
    return when if when is not None and when.year in _PDT_YEARS else None


class MediaPlaylistParser:
    """Parses successive copies of one media playlist, reading only what was appended.

    A live playlist (Orcasound's in particular) only grows, so when a new copy
    starts with the bytes already parsed only the new complete lines are read;
    anything else is parsed from scratch. Parsing is tolerant per entry: a URI
    whose ``#EXTINF`` is missing or bad, or that is not http(s), becomes a
    :class:`PlaylistEntry` with ``error`` set (its sequence number is kept,
    its duration estimated), so one bad line costs one segment, not the stream.
    Only a bad header (no ``#EXTM3U``, a bad media sequence) raises. With
    ``unique_uris`` (Orcasound: segment names never repeat in a folder) a URI
    listed a second time is such an entry too, booked with no duration, so
    the offsets of the segments after it stay those of their audio.
    """

    def __init__(self, url: str, *, unique_uris: bool = False) -> None:
        self.url = url
        self._unique = unique_uris
        self._base = urljoin(url, ".")
        self._prefix = b""
        self._state = _ParseState()
        self._entries: list[PlaylistEntry] = []

    def parse(self, data: str | bytes) -> MediaPlaylist:
        """The playlist as of this copy; raises PlaylistError for a bad header."""
        raw = data.encode() if isinstance(data, str) else data
        if not self._prefix or not raw.startswith(self._prefix):
            _check_header(raw, self.url)
            self._prefix, self._state, self._entries = b"", _ParseState(), []
        cut = raw.rfind(b"\n") + 1
        if cut > len(self._prefix):
            self._feed(raw[len(self._prefix):cut], self._state, self._entries)
            self._prefix = raw[:cut]
        state, entries = self._state, self._entries
        if raw[cut:].strip():
            # An unterminated last line: parse it, but do not commit it.
            state, entries = replace(state, listed=dict(state.listed)), list(entries)
            self._feed(raw[cut:], state, entries)
        return MediaPlaylist(url=self.url, media_sequence=state.media_sequence,
                             target_duration_s=state.target_s, endlist=state.endlist,
                             entries=tuple(entries))

    def _feed(self, chunk: bytes, st: _ParseState, out: list[PlaylistEntry]) -> None:
        for line in chunk.decode("utf-8", errors="replace").splitlines():
            line = line.strip().lstrip("\ufeff")
            if not line:
                continue
            if line.startswith("#"):
                self._tag(line, st)
            else:
                out.append(self._entry(line, st))

    def _tag(self, line: str, st: _ParseState) -> None:
        tag, _, value = line.partition(":")
        if tag == "#EXTINF":
            st.extinf = _extinf(value)
        elif tag == "#EXT-X-DISCONTINUITY":
            st.discontinuity = True
        elif tag == "#EXT-X-PROGRAM-DATE-TIME":
            st.pdt = _pdt(value)
        elif tag == "#EXT-X-ENDLIST":
            st.endlist = True
        elif tag == "#EXT-X-TARGETDURATION":
            target = _extinf(value)
            st.target_s = target if isinstance(target, float) and target > 0 else None
        elif tag == "#EXT-X-MEDIA-SEQUENCE" and not st.seen_entry:
            sequence = ascii_int(value.strip())
            if sequence is None:
                raise PlaylistError(f"{self.url}: malformed playlist: bad "
                                    f"EXT-X-MEDIA-SEQUENCE {value.strip()[:40]!r}")
            st.media_sequence = st.sequence = sequence

    def _entry(self, ref: str, st: _ParseState) -> PlaylistEntry:
        error: str | None = None
        if st.extinf is None:
            error = "URI line without #EXTINF"
        elif isinstance(st.extinf, str):
            error = st.extinf
        try:
            url = urljoin(self._base, ref)
            scheme = urlsplit(url).scheme
        except ValueError:  # e.g. "http://[::1/x": an unclosed IPv6 address
            url, scheme = "", ""
        if scheme not in ("http", "https") or "\ufffd" in ref:
            error, url = f"refers to a non-http(s) or non-UTF-8 URL {ref[:80]!r}", ""
        first = st.listed.setdefault(url, st.sequence) if self._unique and url else None
        if first is not None and first != st.sequence:
            # The same segment listed again holds no new audio: booking its
            # EXTINF would move every later offset by it.
            error, duration = f"listed again (first at sequence {first}); no time booked", 0.0
        elif isinstance(st.extinf, float):
            duration = st.extinf
            st.valid_s += duration
            st.valid_n += 1
        else:
            duration = st.estimate_s()
        if error is not None:
            error = f"{error} (line {ref[:80]!r})"
        entry = PlaylistEntry(st.sequence, url, duration, st.discontinuity, st.pdt, error)
        st.sequence += 1
        st.seen_entry = True
        st.extinf, st.discontinuity = None, False
        if st.pdt is not None:
            st.pdt += timedelta(seconds=duration)
        return entry


def _check_header(raw: bytes, url: str) -> None:
    text = raw[:64].decode("utf-8-sig", errors="replace").lstrip("\ufeff \t\r\n")
    if text.startswith("#EXTM3U"):
        return
    if "\ufffd" in text:
        raise PlaylistError(f"{url}: playlist is not UTF-8 text (starts {raw[:16]!r})")
    raise PlaylistError(f"{url}: not an HLS playlist (no #EXTM3U header; "
                        f"starts {text[:40]!r})")


def _master_from(data: dict[str, Any], url: str) -> MasterPlaylist:
    base = urljoin(url, ".")
    variants = []
    for pl in data.get("playlists") or []:
        info = pl.get("stream_info") or {}
        bandwidth = info.get("bandwidth")
        variants.append(Variant(
            url=_absolute(base, pl.get("uri") or "", url),
            bandwidth=bandwidth if isinstance(bandwidth, int) else 0,
            codecs=info.get("codecs"),
            audio_group=info.get("audio"),
        ))
    renditions = []
    for media in data.get("media") or []:
        if str(media.get("type", "")).upper() != "AUDIO" or not media.get("uri"):
            continue  # audio muxed into the variants has no URI of its own
        renditions.append(AudioRendition(
            url=_absolute(base, media["uri"], url),
            group_id=str(media.get("group_id") or ""),
            name=str(media.get("name") or ""),
            default=str(media.get("default", "")).upper() == "YES",
            autoselect=str(media.get("autoselect", "")).upper() == "YES",
        ))
    if not variants and not renditions:
        raise PlaylistError(f"{url}: master playlist lists no variants")
    return MasterPlaylist(url=url, variants=tuple(variants), audio_renditions=tuple(renditions))


_MASTER_TAGS = (b"#EXT-X-STREAM-INF", b"#EXT-X-MEDIA:")


def parse_playlist(text: str | bytes, url: str) -> MediaPlaylist | MasterPlaylist:
    """Parse either kind of playlist; ``url`` resolves relative URIs and names errors."""
    raw = text.encode() if isinstance(text, str) else text
    if any(tag in raw for tag in _MASTER_TAGS) and b"#EXTINF" not in raw:
        return _master_from(_load(raw, url), url)
    return MediaPlaylistParser(url).parse(raw)


def parse_media_playlist(text: str | bytes, url: str) -> MediaPlaylist:
    """Parse a media playlist; a master playlist or garbage raises PlaylistError."""
    playlist = parse_playlist(text, url)
    if isinstance(playlist, MasterPlaylist):
        raise PlaylistError(f"{url}: is a master playlist, expected a media playlist")
    return playlist

def _audio_only(codecs: str | None) -> bool:
    if not codecs:
        return False
    parts = [c.strip().lower() for c in re.split(r",", codecs) if c.strip()]
    return bool(parts) and all(p.startswith(_AUDIO_CODECS) for p in parts)


def select_audio_rendition(master: MasterPlaylist) -> str:
    """Pick the media playlist URL to follow for audio.

    The rule, first match wins:

    1. an ``#EXT-X-MEDIA:TYPE=AUDIO`` rendition with its own URI (audio only
       by definition): the one marked ``DEFAULT=YES``, else ``AUTOSELECT=YES``,
       else the first listed;
    2. a variant whose ``CODECS`` are all audio codecs (``mp4a``, ``ac-3``,
       ``ec-3``, ``opus``, ``flac``, ...): the one with the highest bandwidth,
       i.e. the best audio;
    3. otherwise (audio muxed with video, or no CODECS): the variant with the
       lowest bandwidth, as the audio is normally the same in every variant
       and ffmpeg extracts it from any of them with the fewest bytes fetched.

    Raises:
        PlaylistError: the master playlist offers nothing to follow.
    """
    renditions = master.audio_renditions
    if renditions:
        for wanted in ("default", "autoselect"):
            for r in renditions:
                if getattr(r, wanted):
                    return r.url
        return renditions[0].url
    audio = [v for v in master.variants if _audio_only(v.codecs)]
    if audio:
        return max(audio, key=lambda v: v.bandwidth).url
    if master.variants:
        return min(master.variants, key=lambda v: v.bandwidth).url
    raise PlaylistError(f"{master.url}: no audio rendition or variant to follow")
