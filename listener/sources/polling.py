"""What every segment source shares: polling, stop handling, segment fetches.

A source (:class:`~listener.sources.hls.HlsSource`,
:class:`~listener.sources.orcasound.OrcasoundSource`) polls a playlist every
``poll_interval_s`` and yields :class:`~listener.sources.segments.Segment` and
:class:`~listener.sources.segments.Gap` records. This base class holds the parts that
do not depend on where the playlist lives:

- every network wait races the ``stop`` event, so iteration ends promptly
  on shutdown (a fetch already running in a worker thread is abandoned; the
  daemon should also call ``HttpClient.stop()`` so its retries end);
- playlist failures are logged once as a WARNING when they start, at DEBUG
  while they last and at INFO when they end, and retried next poll; the
  client's circuit breaker bounds the load on a dead host;
- ``live_edge_utc`` and ``last_playlist_ok`` for lag and readiness.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from datetime import datetime
from typing import TypeVar

from listener.errors import CircuitOpenError, FetchError, PlaylistError
from listener.sources.http_client import FetchKind, HttpClient, OversizeError
from listener.sources.playlist import MediaPlaylist, MediaPlaylistParser
from listener.sources.segments import Gap, Segment

log = logging.getLogger(__name__)

T = TypeVar("T")

# Parsers (each holding one playlist's text) kept per source: the folder
# followed, one being finished, and a spare.
_PARSERS_KEPT = 3


class Stopped(Exception):
    """Raised inside a source when its stop event is set; ends the iteration."""


class PollingSource:
    """Base of the segment sources.

    Args:
        client: the HTTP client (caps, retries and breaker come from its config).
        poll_interval_s: seconds between playlist polls.
        start_segments_back: on a fresh start, how many listed segments
            before the live edge to begin with (0 = only new ones).
        stop: when set, :meth:`segments` ends at its next wait.
        max_resume_backlog_s: a resume point further than this behind the
            live edge (by listed EXTINF) is abandoned with a Gap; None = always
            resume while the point is listed.
        segment_retries: retries of a segment fetch (404 included, since a
            listed segment may appear late on S3); None = the client's.
    """

    #: A URI listed twice is a listing error, not audio (true where segment
    #: names never repeat; a generic HLS server may repeat a filler segment).
    unique_segment_uris = False

    def __init__(self, client: HttpClient, *, poll_interval_s: float = 5.0,
                 start_segments_back: int = 3, stop: asyncio.Event | None = None,
                 max_resume_backlog_s: float | None = None,
                 segment_retries: int | None = None) -> None:
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be > 0, got {poll_interval_s}")
        if start_segments_back < 0:
            raise ValueError(f"start_segments_back must be >= 0, got {start_segments_back}")
        self._client = client
        self._poll_interval_s = poll_interval_s
        self._back = start_segments_back
        self._stop = stop or asyncio.Event()
        self._max_backlog_s = max_resume_backlog_s
        self._segment_retries = segment_retries
        self._failures: dict[str, int] = {}
        self._parsers: dict[str, MediaPlaylistParser] = {}
        self._oversize_warned: set[str] = set()
        #: Wall-clock time where the newest listed segment ends (None: unknown).
        self.live_edge_utc: datetime | None = None
        #: ``time.monotonic()`` of the last playlist fetched and parsed.
        self.last_playlist_ok: float | None = None

    @property
    def stop_event(self) -> asyncio.Event:
        """The event that ends :meth:`segments` when set."""
        return self._stop

    async def fetch(self, segment: Segment) -> bytes:
        """The segment's bytes (404 retried: S3 may list it before serving it).

        Raises:
            FetchError: still failing after the retries.
        """
        return await self._client.aget(segment.url, "segment", retry_404=True,
                                       retries=self._segment_retries)

    async def fetch_or_gap(self, segment: Segment) -> bytes | Gap:
        """The segment's bytes, or a one-segment :class:`Gap` naming its URL.

        A failure is logged as a WARNING with the URL, never skipped silently.
        During shutdown (stop event set, or the client stopped) the
        FetchError is re-raised instead: the segment is not lost, a resumed
        run will fetch it again.
        """
        while True:
            try:
                return await self.fetch(segment)
            except CircuitOpenError as err:
                # The host is down, not the segment: wait for the breaker's
                # trial instead of declaring never-requested segments lost.
                if self._stop.is_set() or self._client.stopped:
                    raise
                log.debug("segment %s waits for the circuit breaker: %s", segment.url, err)
                try:
                    await self._pause()
                except Stopped:
                    raise err from None
            except FetchError as err:
                if self._stop.is_set() or self._client.stopped:
                    raise
                return self._lost(segment, err)

    def _lost(self, segment: Segment, err: FetchError) -> Gap:
        log.warning("segment %s of %s is lost: %s", segment.sequence, segment.stream_key, err)
        return Gap(segment.stream_key, segment.sequence, segment.sequence,
                   f"segment fetch failed: {err.reason}", segment.utc_start,
                   segment.duration_s, segment.url)

    async def _race(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` unless the stop event comes first (then raise Stopped)."""
        if self._stop.is_set():
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise Stopped
        task = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
        if task in done:
            return task.result()
        raise Stopped

    async def _pause(self, seconds: float | None = None) -> None:
        """Sleep one poll interval, or raise Stopped as soon as stop is set."""
        try:
            await asyncio.wait_for(self._stop.wait(), self._poll_interval_s
                                   if seconds is None else seconds)
        except TimeoutError:
            return
        raise Stopped

    async def _get(self, url: str, kind: FetchKind, max_bytes: int | None, what: str,
                   expect_404: bool = False) -> bytes | None:
        """Fetch for polling: None on failure, logged without flooding.

        ``expect_404``: a 404 is a normal state (logged at INFO, not WARNING).
        """
        try:
            data = await self._race(self._client.aget(url, kind, max_bytes))
        except FetchError as err:
            if isinstance(err, OversizeError) and what not in self._oversize_warned:
                # Refused on every poll until configured otherwise: say how.
                self._oversize_warned.add(what)
                log.warning("%s %s is larger than the %d-byte cap and is refused on every "
                            "poll; raise stream.fetch.max_playlist_bytes to follow it (%s)",
                            what, url, self._client.max_bytes_for(kind)
                            if max_bytes is None else max_bytes, err)
            self._note_failure(what, url, err, expect_404 and err.status == 404)
            return None
        self._oversize_warned.discard(what)
        return data

    async def _get_playlist(self, url: str, what: str = "playlist") -> MediaPlaylist | None:
        """Fetch and parse a media playlist; None (logged and counted) when it fails.

        Parsing runs in a worker thread and reads only what was appended since
        the last copy, so a long-lived 100,000-entry playlist never holds up
        the event loop (and with it /healthz).
        """
        # A playlist is 404 until its first segment exists (a node just started).
        data = await self._get(url, "playlist", None, what, expect_404=True)
        if data is None:
            return None
        parser = self._parsers.pop(url, None) or MediaPlaylistParser(
            url, unique_uris=self.unique_segment_uris)
        # Most recently used last; a few old folders' parsers are kept at most.
        self._parsers[url] = parser
        while len(self._parsers) > _PARSERS_KEPT:
            self._parsers.pop(next(iter(self._parsers)))
        try:
            playlist = await self._race(asyncio.to_thread(parser.parse, data))
        except PlaylistError as err:
            self._parse_failed(what, url, err)
            return None
        self._note_ok(what, url)
        self.last_playlist_ok = time.monotonic()
        return playlist

    def _parse_failed(self, what: str, url: str, err: Exception) -> None:
        """A fetched playlist (or latest.txt) that is garbage: logged and counted."""
        self._client.report_invalid(url, "playlist", str(err))
        self._note_failure(what, url, err, False)

    def _note_failure(self, what: str, url: str, err: Exception, expected: bool) -> None:
        count = self._failures.get(what, 0) + 1
        self._failures[what] = count
        if count == 1:
            level = logging.INFO if expected else logging.WARNING
            log.log(level, "%s fetch failed, retrying every %.1f s: %s", what,
                    self._poll_interval_s, err)
        else:
            log.debug("%s fetch failed (%d in a row): %s", what, count, err)

    def _note_ok(self, what: str, url: str) -> None:
        count = self._failures.pop(what, 0)
        if count:
            log.info("%s %s fetched again after %d failed attempts", what, url, count)
