"""HLS playlist parsing (pure functions over text, built on the ``m3u8`` library).

Parsing is tolerant of what real encoders write (ffmpeg's segment muxer, as
Orcasound uses it: ``#EXT-X-ALLOW-CACHE``, no ``#EXT-X-ENDLIST`` while live,
no program date-time) but strict about what would make us fetch the wrong
thing: the text must start with ``#EXTM3U``, durations must be finite and
non-negative, segment and variant URLs must resolve to http(s). Everything
else that is wrong raises :class:`~listener.errors.PlaylistError` naming the
playlist URL.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import m3u8

from listener.errors import PlaylistError

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
    url = urljoin(base_url, ref.strip())
    if urlsplit(url).scheme not in ("http", "https"):
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
    except (ValueError, TypeError, KeyError, IndexError, AttributeError,
            m3u8.ParseError) as err:
        raise PlaylistError(f"{url}: malformed playlist: {err}") from err


def _media_from(data: dict[str, Any], url: str) -> MediaPlaylist:
    sequence = data.get("media_sequence") or 0
    if not isinstance(sequence, int) or sequence < 0:
        raise PlaylistError(f"{url}: bad EXT-X-MEDIA-SEQUENCE {sequence!r}")
    target = data.get("targetduration")
    target_s = float(target) if isinstance(target, int | float) and target > 0 else None
    base = urljoin(url, ".")
    entries = []
    for i, seg in enumerate(data.get("segments") or []):
        duration = seg.get("duration")
        if (not isinstance(duration, int | float) or not math.isfinite(duration)
                or duration < 0 or duration > _MAX_SEGMENT_S):
            raise PlaylistError(f"{url}: bad EXTINF duration {duration!r} "
                                f"for segment {seg.get('uri')!r}")
        uri = seg.get("uri")
        if not isinstance(uri, str) or not uri.strip():
            raise PlaylistError(f"{url}: EXTINF without a segment URI")
        entries.append(PlaylistEntry(
            sequence=sequence + i,
            url=_absolute(base, uri, url),
            duration_s=float(duration),
            discontinuity=bool(seg.get("discontinuity")),
            program_date_time=_utc(seg.get("current_program_date_time")),
        ))
    return MediaPlaylist(url=url, media_sequence=sequence, target_duration_s=target_s,
                         endlist=bool(data.get("is_endlist")), entries=tuple(entries))


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


def parse_playlist(text: str | bytes, url: str) -> MediaPlaylist | MasterPlaylist:
    """Parse either kind of playlist; ``url`` resolves relative URIs and names errors."""
    data = _load(text, url)
    if data.get("is_variant") or data.get("playlists"):
        return _master_from(data, url)
    return _media_from(data, url)


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
