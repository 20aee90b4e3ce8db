"""Segment sources: where the audio segments come from, in order, with time.

The public face of the fetch stage. Two sources yield
:class:`~listener.sources.segments.Segment` and :class:`~listener.sources.segments.Gap`
records from ``async for item in source.segments(resume)``:

- :class:`~listener.sources.orcasound.OrcasoundSource`: an Orcasound node
  (``latest.txt`` -> ``hls/<ts>/live.m3u8``), across node restarts;
- :class:`HlsSource`: any live HLS media playlist (or a master playlist, from
  which an audio rendition is chosen): sliding windows, discontinuities,
  ``#EXT-X-ENDLIST`` and program date-time.

Both fetch a segment's bytes with ``fetch`` / ``fetch_or_gap`` and expose
``live_edge_utc`` and ``last_playlist_ok``. ``make_source`` builds the one a
:class:`~listener.config.StreamConfig` asks for. See ``docs/sources.md``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from listener.config import StreamConfig
from listener.errors import PlaylistError
from listener.sources.http_client import HttpClient
from listener.sources.orcasound import OrcasoundSource, parse_latest_txt
from listener.sources.playlist import (
    MasterPlaylist,
    MediaPlaylist,
    parse_media_playlist,
    parse_playlist,
    select_audio_rendition,
)
from listener.sources.polling import PollingSource, Stopped
from listener.sources.segments import Gap, Position, Segment, StreamTracker

__all__ = [
    "Gap",
    "HlsSource",
    "MasterPlaylist",
    "MediaPlaylist",
    "OrcasoundSource",
    "Position",
    "Segment",
    "make_source",
    "parse_latest_txt",
    "parse_media_playlist",
    "parse_playlist",
    "select_audio_rendition",
]

log = logging.getLogger(__name__)

# A variant named by a master playlist that fails this many polls in a row is
# forgotten and the master read again: servers (Wowza's chunklist_wNNN.m3u8)
# name a new variant after a restart or when a session id expires.
_VARIANT_FAILED_POLLS = 3


class HlsSource(PollingSource):
    """Segments of any HLS playlist URL (media or master).

    The stream_key of every record is ``url`` as configured, so a persisted
    :class:`Position` stays valid even if a master playlist later points
    elsewhere (a variant that fails ``_VARIANT_FAILED_POLLS`` polls in a row
    sends it back to the master). Without EXT-X-PROGRAM-DATE-TIME, ``stream_start_utc`` is
    estimated on the first fetch of a live playlist, as "now minus the
    listed duration" (the live edge is taken as now; its error is the
    publishing latency, typically one or two segment durations), and again
    the same way after the encoder restarts its numbering. A playlist
    with ``#EXT-X-ENDLIST`` ends the iteration after its last segment.

    Args:
        url: http(s) URL of a media or master playlist.
        client: the HTTP client.
        **kwargs: see :class:`~listener.sources.polling.PollingSource`.
    """

    def __init__(self, url: str, client: HttpClient, *, poll_interval_s: float = 5.0,
                 start_segments_back: int = 3, stop: asyncio.Event | None = None,
                 max_resume_backlog_s: float | None = None,
                 segment_retries: int | None = None) -> None:
        super().__init__(client, poll_interval_s=poll_interval_s,
                         start_segments_back=start_segments_back, stop=stop,
                         max_resume_backlog_s=max_resume_backlog_s,
                         segment_retries=segment_retries)
        self.url = url
        self.stream_key = url
        #: The media playlist followed (differs from ``url`` for a master).
        self.media_url: str | None = None

    async def segments(self, resume: Position | None = None) -> AsyncIterator[Segment | Gap]:
        """Yield segments (and gaps) in order until ENDLIST or the stop event."""
        try:
            async for item in self._follow(resume):
                yield item
        except Stopped:
            return

    async def _resolve(self) -> MediaPlaylist | None:
        """Fetch ``url``; if it is a master playlist, choose and fetch the audio one."""
        data = await self._get(self.url, "playlist", None, "playlist")
        if data is None:
            return None
        try:
            playlist = parse_playlist(data, self.url)
        except PlaylistError as err:
            self._note_failure("playlist", self.url, err, False)
            return None
        if isinstance(playlist, MasterPlaylist):
            try:
                chosen = select_audio_rendition(playlist)
            except PlaylistError as err:
                self._note_failure("playlist", self.url, err, False)
                return None
            log.info("%s is a master playlist; following %s", self.url, chosen)
            self.media_url = chosen
            return await self._get_playlist(chosen)
        self.media_url = self.url
        self._note_ok("playlist", self.url)
        self.last_playlist_ok = time.monotonic()
        return playlist

    async def _follow(self, resume: Position | None) -> AsyncIterator[Segment | Gap]:
        tracker = StreamTracker(self.url)
        resume_sequence = None
        if resume is not None:
            if resume.stream_key == self.url:
                resume_sequence = resume.sequence
            else:
                log.warning("resume position is for %s, not %s; starting fresh",
                            resume.stream_key, self.url)
        variant_failures = 0
        while True:
            if self.media_url is None:
                playlist = await self._resolve()
            else:
                playlist = await self._get_playlist(self.media_url)
            variant_failures = 0 if playlist is not None else variant_failures + 1
            if variant_failures >= _VARIANT_FAILED_POLLS and self.media_url not in (
                    None, self.url):
                log.warning("%s: variant playlist %s failed %d polls in a row; reading the "
                            "master playlist again", self.url, self.media_url, variant_failures)
                self.media_url = None
                variant_failures = 0
            if playlist is not None:
                if not tracker.started:
                    gap = self._start(tracker, playlist, resume_sequence)
                    if gap is not None:
                        yield gap
                # The clock, in case the encoder restarted (see StreamTracker.advance).
                for item in tracker.advance(playlist, datetime.now(UTC)):
                    yield item
                self._update_live_edge(tracker, playlist)
                if playlist.endlist:
                    log.info("%s: #EXT-X-ENDLIST after sequence %d; the stream is over",
                             self.url, playlist.last_sequence)
                    return
            await self._pause()

    def _start(self, tracker: StreamTracker, playlist: MediaPlaylist,
               resume_sequence: int | None) -> Gap | None:
        has_pdt = any(e.program_date_time is not None for e in playlist.entries)
        if not has_pdt and not playlist.endlist:
            listed = sum(e.duration_s for e in playlist.entries)
            tracker.stream_start_utc = datetime.now(UTC) - timedelta(seconds=listed)
        return tracker.start(playlist, resume_sequence, self._back, self._max_backlog_s)

    def _update_live_edge(self, tracker: StreamTracker, playlist: MediaPlaylist) -> None:
        newest = playlist.entries[-1] if playlist.entries else None
        if newest is not None and newest.program_date_time is not None:
            self.live_edge_utc = newest.program_date_time + timedelta(seconds=newest.duration_s)
        elif tracker.stream_start_utc is not None:
            self.live_edge_utc = tracker.stream_start_utc + timedelta(
                seconds=tracker.live_edge_offset_s(playlist))


def make_source(config: StreamConfig, client: HttpClient,
                stop: asyncio.Event | None = None) -> OrcasoundSource | HlsSource:
    """The source a stream config asks for (``kind: orcasound`` or ``kind: hls``)."""
    if config.kind == "orcasound":
        if not config.node:
            raise PlaylistError("stream kind 'orcasound' needs a node")
        return OrcasoundSource(config.base_url, config.node, client,
                               poll_interval_s=config.poll_interval_s,
                               start_segments_back=config.start_segments_back, stop=stop,
                               finish_s=config.restart_grace_s)
    if not config.url:
        raise PlaylistError("stream kind 'hls' needs a url")
    return HlsSource(config.url, client, poll_interval_s=config.poll_interval_s,
                     start_segments_back=config.start_segments_back, stop=stop)
