"""The segment source of ``listener replay``: a planned archive range, fetched ahead.

:class:`ReplaySource` speaks the protocol the live daemon's
:class:`~listener.pipeline.station.StationPipeline` reads (``segments(resume)``,
``fetch_or_gap``, ``stop_event``, ``live_edge_utc``, ``last_playlist_ok``),
so a replay is scored by exactly the live code path. Three differences from
the live sources:

- the segments are known up front (:func:`listener.replay.plan.plan_range`), so
  up to ``concurrency`` of them are fetched ahead in parallel and the CPU
  never waits on the network; the iteration ends after the last one;
- nothing is shed: before yielding the next segment it waits while more than
  ``max_backlog_s`` of audio waits to be scored (the live daemon drops the
  oldest audio when inference falls behind; a replay slows down instead);
- a segment that still answers 404 after the retries becomes a one-segment
  :class:`~listener.sources.segments.Gap` naming its URL, but any other fetch failure
  (5xx, timeouts) stops the replay, which can then be resumed: the archive is
  static, so retrying later beats losing audio.

Number jumps inside a folder (``sequence_jump`` archive gaps) are yielded as
:class:`~listener.sources.segments.Gap` records where they fall; the other archive
gaps (between folders, missing playlists) are only reported in the summary.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from listener.errors import FetchError
from listener.numerals import ascii_int
from listener.replay.plan import ArchiveSegment, RangePlan
from listener.sources.http_client import HttpClient
from listener.sources.segments import Gap, Position, Segment

log = logging.getLogger(__name__)

# How often a paused source looks at the scoring backlog again.
_BACKLOG_POLL_S = 0.02


def in_range_s(seg: ArchiveSegment, start_utc: datetime, end_utc: datetime) -> float:
    """Seconds of ``seg`` inside [start, end) (0 for a warm-up segment)."""
    begin = seg.utc_start
    if begin is None or seg.warmup:
        return 0.0
    lo = max(begin.timestamp(), start_utc.timestamp())
    hi = min(begin.timestamp() + seg.duration_s, end_utc.timestamp())
    return max(0.0, hi - lo)


def _folder_ts(stream_key: str) -> int | None:
    """The folder time in ``<node>/hls/<ts>``, None for other keys."""
    tail = stream_key.rsplit("/", 1)[-1]
    return ascii_int(tail)


def resume_index(segments: list[ArchiveSegment], resume: Position | None) -> int:
    """How many planned segments a resume after ``resume`` skips.

    Every segment up to and including the position, in plan order: the
    folders are compared by their time, then the sequence numbers.
    """
    if resume is None:
        return 0
    for i, seg in enumerate(segments):
        if seg.stream_key == resume.stream_key and seg.sequence == resume.sequence:
            return i + 1
    ts = _folder_ts(resume.stream_key)
    if ts is None:
        log.warning("resume position %s is not an archive folder; replaying from the start",
                    resume.stream_key)
        return 0
    n = 0
    while n < len(segments) and ((_folder_ts(segments[n].stream_key) or 0),
                                 segments[n].sequence) <= (ts, resume.sequence):
        n += 1
    return n


class ReplaySource:
    """The planned segments of a range, in order, fetched ``concurrency`` at a time.

    Args:
        plan: what to replay (:func:`listener.replay.plan.plan_range`).
        client: the HTTP client (retries, caps, timeouts); the caller owns it.
        concurrency: segment fetches in flight at most.
        backlog_s: seconds of audio waiting to be scored (the pipeline's
            batcher); None = never pause.
        max_backlog_s: pause while ``backlog_s()`` is above this.
        stop: when set, :meth:`segments` ends at its next step.
    """

    def __init__(self, plan: RangePlan, client: HttpClient, *, concurrency: int = 4,
                 backlog_s: Callable[[], float] | None = None, max_backlog_s: float = 60.0,
                 stop: asyncio.Event | None = None) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.plan = plan
        self._client = client
        self._concurrency = concurrency
        self._backlog_s = backlog_s
        self._max_backlog_s = max_backlog_s
        self._stop = stop or asyncio.Event()
        self._tasks: dict[tuple[str, int], asyncio.Future[bytes]] = {}
        # Its own threads: the loop's default pool is smaller than some
        # concurrencies and is shared with the other stages.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            concurrency, thread_name_prefix="replay-fetch")
        #: The pipeline's lag is measured against the end of the range.
        self.live_edge_utc: datetime | None = plan.end_utc
        self.last_playlist_ok: float | None = time.monotonic()
        #: Segments that answered 404 after the retries, as the Gaps yielded for them.
        self.lost: list[Gap] = []
        #: The fetch failure that stopped the replay (it can be resumed), if any.
        self.failure: FetchError | None = None
        #: True once every planned segment was handed out (not stopped early).
        self.finished = False
        self.fetched = 0  # segments whose bytes were handed to the pipeline
        self.done_index = 0  # plan index just past the last segment handed out

    @property
    def stop_event(self) -> asyncio.Event:
        """Set it to end :meth:`segments` (the pipeline's stop does)."""
        return self._stop

    def _items(self, first: int) -> list[tuple[int, Segment | Gap]]:
        """(plan index, record) from segment ``first`` on, number-jump gaps in place."""
        jumps = [g for g in self.plan.gaps if g.kind == "sequence_jump"
                 and g.stream_key is not None and g.from_sequence is not None
                 and g.to_sequence is not None]
        items: list[tuple[int, Segment | Gap]] = []
        for i, seg in enumerate(self.plan.segments):
            for g in list(jumps):
                if g.stream_key == seg.stream_key and g.to_sequence is not None \
                        and g.to_sequence < seg.sequence:
                    jumps.remove(g)
                    if i >= first:
                        assert g.from_sequence is not None
                        items.append((i, Gap(g.stream_key, g.from_sequence, g.to_sequence,
                                             g.reason, g.start_utc, g.duration_s)))
            if i >= first:
                items.append((i, seg))
        return items

    async def segments(self, resume: Position | None = None) -> AsyncIterator[Segment | Gap]:
        """Yield the planned segments (and number-jump gaps) after ``resume``, in order."""
        first = resume_index(self.plan.segments, resume)
        self.done_index = first
        if resume is not None:
            log.info("resuming the replay after %s segment %d: %d of %d planned segments "
                     "are done", resume.stream_key, resume.sequence, first,
                     len(self.plan.segments))
        todo = collections.deque(self._items(first))
        ahead: collections.deque[tuple[int, Segment | Gap]] = collections.deque()
        try:
            while todo or ahead:
                # Keep `concurrency` fetches going (started, not yet taken by
                # fetch_or_gap): the pipeline's next segments are always on the way.
                while todo and len(self._tasks) < self._concurrency:
                    index, record = todo.popleft()
                    if isinstance(record, Segment):
                        self._start_fetch(record)
                    ahead.append((index, record))
                index, record = ahead.popleft()
                if isinstance(record, Segment) and not await self._room_to_score():
                    return
                if self._stop.is_set():
                    return
                self.done_index = index + 1 if isinstance(record, Segment) else index
                yield record
            self.finished = not self._stop.is_set()
        finally:
            self._cancel_fetches()

    def _cancel_fetches(self) -> None:
        # A fetch's worker thread runs on until its request ends (the replay
        # stops the client, which ends its retries); only the result is dropped.
        for task in self._tasks.values():
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a failed fetch nobody needs is not an error
            task.cancel()
        self._tasks.clear()

    async def aclose(self) -> None:
        """Drop the fetches still in flight (after the pipeline is done)."""
        tasks = list(self._tasks.values())
        self._cancel_fetches()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _fetch(self, seg: Segment) -> asyncio.Future[bytes]:
        """Start fetching ``seg`` in a worker thread (404 retried, as live)."""
        get = functools.partial(self._client.get, seg.url, "segment", retry_404=True)
        return asyncio.get_running_loop().run_in_executor(self._executor, get)

    def _start_fetch(self, seg: Segment) -> None:
        self._tasks[(seg.stream_key, seg.sequence)] = self._fetch(seg)

    async def _room_to_score(self) -> bool:
        """Wait while the scoring backlog is full; False if stopped meanwhile."""
        while self._backlog_s is not None and self._backlog_s() > self._max_backlog_s:
            try:
                await asyncio.wait_for(self._stop.wait(), _BACKLOG_POLL_S)
            except TimeoutError:
                continue
            return False
        return True

    async def fetch_or_gap(self, segment: Segment) -> bytes | Gap:
        """The segment's bytes (usually fetched already), or a Gap naming its URL.

        Raises:
            FetchError: the replay was stopped, or the fetch failed other
                than by 404 (the replay is then stopped: resume it later).
        """
        task = self._tasks.pop((segment.stream_key, segment.sequence), None)
        if task is None:
            task = self._fetch(segment)
        stopper: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not task.done():
            task.cancel()
            raise FetchError(segment.url, "the replay was stopped before it arrived")
        try:
            data = task.result()
        except FetchError as err:
            if self._stop.is_set() or self._client.stopped:
                raise
            if err.status != 404:
                log.error("segment %s of %s could not be fetched (%s); stopping the replay, "
                          "run it again to resume", segment.sequence, segment.stream_key, err)
                self.failure = err
                self._stop.set()
                raise
            log.warning("segment %s of %s is lost: %s", segment.sequence, segment.stream_key,
                        err)
            gap = Gap(segment.stream_key, segment.sequence, segment.sequence,
                      f"segment not found after retries: {err.reason}", segment.utc_start,
                      segment.duration_s, segment.url)
            self.lost.append(gap)
            return gap
        self.fetched += 1
        return data
