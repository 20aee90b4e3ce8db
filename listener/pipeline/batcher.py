"""Windows -> batches -> scores, off the event loop, with an explicit shedding policy.

One :class:`SharedBatcher` per loaded model in the process; every model lane
of every station (a lone station is a fleet of one) puts its windows into its
own :class:`BatchLane`.

Windows queue up in arrival order. A batch is cut when ``batch_size`` windows
wait or the oldest has waited ``max_wait_s``; it is resampled and scored in a
single worker thread (so scores come back in order and the loop never
blocks). If more than ``max_backlog_s`` of audio waits unscored, the oldest
windows are dropped, counted under ``listener_audio_dropped_seconds_total
{reason="backlog"}`` and logged: a detector that falls ever further behind is
worse than one that says it skipped.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from listener.tasks import cancel_and_wait

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class _Observer(Protocol):
    def observe(self, amount: float) -> None: ...


class _Gauge(Protocol):
    def set(self, value: float) -> None: ...


class _Count(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class BatcherMetrics(Protocol):
    """What a lane reports (:class:`listener.metrics.Metrics` is one)."""

    @property
    def backlog_seconds(self) -> _Gauge: ...

    @property
    def batch_size(self) -> _Observer: ...

    @property
    def inference_duration(self) -> _Observer: ...

    @property
    def windows_scored(self) -> _Count: ...

    def drop(self, reason: str, seconds: float) -> None: ...


class _Shedder:
    """Sheds the oldest queued windows past a backlog limit: counted as dropped
    ``backlog`` audio, logged at most every 10 s (a promise per station)."""

    def __init__(self, prefix: str, clock: Clock) -> None:
        self.prefix = prefix
        self.dropped = 0
        self._clock = clock
        self._last_log = float("-inf")

    def shed(self, queue: collections.deque[Any], limit: int, hop_s: float,
             metrics: BatcherMetrics | None) -> None:
        while len(queue) > limit:
            queue.popleft()
            self.dropped += 1
            if metrics is not None:
                metrics.drop("backlog", hop_s)
            now = self._clock()
            if now - self._last_log > 10.0:
                self._last_log = now
                log.warning("%sinference is behind by %.0f s: dropping the oldest audio "
                            "(%d windows dropped so far)", self.prefix, len(queue) * hop_s,
                            self.dropped)


class Waved(Protocol):
    """A queued item holding its model-rate waveform (the pipeline's tagged window)."""

    @property
    def wave(self) -> np.ndarray: ...


W = TypeVar("W", bound=Waved)


class BatchLane(Generic[W]):
    """One station's lane of a :class:`SharedBatcher`: its own queue, backlog limit,
    metrics and ordered results; the same interface as :class:`MicroBatcher`."""

    def __init__(self, shared: SharedBatcher[W], name: str, *, max_backlog_s: float,
                 hop_s: float, metrics: BatcherMetrics | None) -> None:
        self.shared = shared
        self.name = name
        self.hop_s = hop_s
        self.max_backlog_windows = max(1, int(max_backlog_s / hop_s))
        self.metrics = metrics
        self.queue: collections.deque[tuple[float, W]] = collections.deque()
        self.in_flight = 0  # windows of this lane inside the batch being scored
        self.closed = False
        self.abandoned = False  # its reader is gone: put and deliver drop
        self._shedder = _Shedder(f"{name}: ", shared.clock)
        self._results: collections.deque[tuple[list[W], np.ndarray] | BaseException] = \
            collections.deque()
        self._ready = asyncio.Event()

    @property
    def dropped_windows(self) -> int:
        return self._shedder.dropped

    @property
    def backlog_s(self) -> float:
        return len(self.queue) * self.hop_s

    @property
    def idle(self) -> bool:
        """No window of this lane is queued, being scored or scored but unread."""
        return not (self.queue or self.in_flight or self._results)

    def put(self, window: W) -> None:
        """Queue a window (never blocks); sheds this lane's oldest past its backlog limit."""
        if self.abandoned:
            return  # its station is failing and will be rebuilt; nobody would read the score
        self.shared.check_shape(self.name, window.wave)
        self.queue.append((self.shared.clock(), window))
        self._shedder.shed(self.queue, self.max_backlog_windows, self.hop_s, self.metrics)
        self.update_gauge()
        self.shared.wake()

    def close(self) -> None:
        """No more windows: :meth:`batches` ends once the queued ones are scored."""
        self.closed = True
        self.shared.wake()
        self._ready.set()

    async def batches(self) -> AsyncIterator[tuple[list[W], np.ndarray]]:
        """This lane's ``(windows, scores)`` in window order."""
        self.shared.ensure_running()
        try:
            while True:
                if self._results:
                    item = self._results.popleft()
                    if isinstance(item, BaseException):
                        raise item
                    yield item
                    continue
                if self.closed and not self.queue and not self.in_flight:
                    return
                self._ready.clear()
                await self._ready.wait()
        finally:
            # Nobody reads this lane any more (a failed batch ended its consumer):
            # what it would still queue or be given must not pile up unread.
            self.abandoned = True
            self.closed = True
            self.queue.clear()
            self._results.clear()

    def shutdown(self) -> None:
        """Leave the shared batcher (after :meth:`batches` ended); queued windows are dropped."""
        self.closed = True
        self.queue.clear()
        self.shared.detach(self)

    def update_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.backlog_seconds.set(self.backlog_s)

    def deliver(self, result: tuple[list[W], np.ndarray] | BaseException) -> None:
        if self.abandoned:
            return
        self._results.append(result)
        self._ready.set()


class SharedBatcher(Generic[W]):
    """One model's batcher shared by many stations: fair, bounded, latency-bounded.

    Each station puts windows into its own :class:`BatchLane`. A batch is cut
    when ``batch_size`` windows wait in all lanes together, when the oldest has
    waited ``max_wait_s``, or when a closing lane has windows left; it is filled
    round-robin, one window per lane per turn, starting after the lane that
    was served last. So a station catching up after an outage (a long queue)
    gets no more than its share of each batch and cannot starve the live ones,
    while each lane's backlog limit (``buffer.max_backlog_s``) sheds only that
    station's oldest audio. Batches are scored one at a time in a worker
    thread; each score goes back to its own window, so the scores a station
    gets do not depend on which other stations shared its batches (beyond the
    model's own float rounding across batch sizes, which a single station sees
    too).
    """

    def __init__(self, score_waves: Callable[[np.ndarray], np.ndarray], *, batch_size: int,
                 max_wait_s: float, clock: Clock = time.monotonic,
                 executor: concurrent.futures.ThreadPoolExecutor | None = None) -> None:
        if batch_size < 1 or max_wait_s < 0:
            raise ValueError(f"batch_size must be >= 1 and max_wait_s >= 0, got "
                             f"{batch_size} and {max_wait_s}")
        self._score_waves = score_waves
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        # Injectable so tests step time instead of sleeping; waits stay on the loop's timer.
        self.clock = clock
        self.lanes: list[BatchLane[W]] = []
        self._next = 0  # the lane the next batch starts with
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._owns_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="infer")
        self.batches_scored = 0
        self._shape: tuple[int, ...] | None = None  # of every window (the first one's)

    def alike(self) -> SharedBatcher[W]:
        """A batcher of the same model, settings and scoring thread, for windows of
        another length (one batch is one array); close it before this one."""
        return SharedBatcher(self._score_waves, batch_size=self.batch_size,
                             max_wait_s=self.max_wait_s, clock=self.clock,
                             executor=self._executor)

    def lane(self, name: str, *, max_backlog_s: float, hop_s: float,
             metrics: BatcherMetrics | None = None) -> BatchLane[W]:
        """A new lane for one station (one per pipeline run)."""
        lane = BatchLane(self, name, max_backlog_s=max_backlog_s, hop_s=hop_s, metrics=metrics)
        self.lanes.append(lane)
        return lane

    def detach(self, lane: BatchLane[W]) -> None:
        if lane in self.lanes:
            index = self.lanes.index(lane)
            self.lanes.remove(lane)
            if index < self._next:
                self._next -= 1

    def wake(self) -> None:
        self._wake.set()

    def check_shape(self, lane: str, wave: np.ndarray) -> None:
        """A batch is one array: every window of this batcher has the first one's shape."""
        if self._shape is None:
            self._shape = wave.shape
        elif wave.shape != self._shape:
            raise ValueError(f"{lane}: a window of shape {wave.shape} for a model batcher of "
                             f"{self._shape} windows (windows of another length need "
                             f"their own batcher)")

    def ensure_running(self) -> None:
        """Start the scheduling task on this loop if it is not running."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="shared-batcher")

    async def aclose(self) -> None:
        """Stop scheduling and release the worker thread (after every lane has ended)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            await asyncio.gather(self._task, return_exceptions=True)
        if self._owns_executor:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def _waiting(self) -> int:
        return sum(len(lane.queue) for lane in self.lanes)

    def _due_in(self) -> float:
        """Seconds until a batch must be cut (0: now)."""
        queued = [lane for lane in self.lanes if lane.queue]
        if not queued:
            return float("inf")
        if self._waiting() >= self.batch_size or any(lane.closed for lane in queued):
            return 0.0
        oldest = min(lane.queue[0][0] for lane in queued)
        return max(0.0, self.max_wait_s - (self.clock() - oldest))

    async def _run(self) -> None:
        while True:
            due = self._due_in()
            if due > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(),
                                           None if due == float("inf") else due)
                except TimeoutError:
                    pass
                continue
            await self._score(self._cut())

    def _cut(self) -> list[tuple[BatchLane[W], W]]:
        """Up to ``batch_size`` windows, one per lane per turn, round-robin."""
        batch: list[tuple[BatchLane[W], W]] = []
        n = len(self.lanes)
        turn = self._next % n
        idle = 0
        while len(batch) < self.batch_size and idle < n:
            lane = self.lanes[turn]
            turn = (turn + 1) % n
            if not lane.queue:
                idle += 1
                continue
            idle = 0
            batch.append((lane, lane.queue.popleft()[1]))
            lane.in_flight += 1
        self._next = turn
        return batch

    async def _score(self, batch: list[tuple[BatchLane[W], W]]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        # Whatever fails here goes to each station in the batch; the scheduler
        # lives on, or every lane on this model would wait forever.
        try:
            waves = np.stack([item.wave for _, item in batch])
            scores = await loop.run_in_executor(self._executor, self._score_waves, waves)
            got = np.asarray(scores, dtype=np.float64)
            if got.shape[:1] != (len(batch),):
                raise ValueError(f"the model gave scores of shape {got.shape} for a "
                                 f"batch of {len(batch)} windows")
            result: np.ndarray | BaseException = got
        except Exception as err:
            result = err
        elapsed = time.perf_counter() - started
        self.batches_scored += 1
        by_lane: dict[int, tuple[BatchLane[W], list[int]]] = {}
        for i, (lane, _) in enumerate(batch):
            by_lane.setdefault(id(lane), (lane, []))[1].append(i)
        for lane, rows in by_lane.values():
            lane.in_flight -= len(rows)
            if isinstance(result, BaseException):
                lane.deliver(result)
                continue
            lane.deliver(([batch[i][1] for i in rows], result[rows]))
            if lane.metrics is not None:
                lane.metrics.batch_size.observe(len(batch))
                lane.metrics.inference_duration.observe(elapsed)
                lane.metrics.windows_scored.inc(len(rows))
            lane.update_gauge()
