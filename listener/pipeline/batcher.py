"""Windows -> batches -> scores, off the event loop, with an explicit shedding policy.

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
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np

if TYPE_CHECKING:
    from listener.service.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    """Collects windows into batches and scores them in a worker thread."""

    def __init__(self, score: Callable[[list[T]], np.ndarray], *, batch_size: int,
                 max_wait_s: float, max_backlog_s: float, hop_s: float,
                 metrics: Metrics | None = None) -> None:
        self._score = score
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.max_backlog_windows = max(1, int(max_backlog_s / hop_s))
        self.hop_s = hop_s
        self.metrics = metrics
        self._queue: collections.deque[tuple[float, T]] = collections.deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="infer")
        self.dropped_windows = 0
        self._last_drop_log = 0.0

    @property
    def backlog_s(self) -> float:
        return len(self._queue) * self.hop_s

    def put(self, window: T) -> None:
        """Queue a window (never blocks); sheds the oldest past the backlog limit."""
        self._queue.append((time.monotonic(), window))
        while len(self._queue) > self.max_backlog_windows:
            self._queue.popleft()
            self.dropped_windows += 1
            if self.metrics is not None:
                self.metrics.drop("backlog", self.hop_s)
            now = time.monotonic()
            if now - self._last_drop_log > 10.0:
                self._last_drop_log = now
                log.warning("inference is behind by %.0f s: dropping the oldest audio "
                            "(%d windows dropped so far)", self.backlog_s, self.dropped_windows)
        if self.metrics is not None:
            self.metrics.backlog_seconds.set(self.backlog_s)
        self._wake.set()

    def close(self) -> None:
        """No more windows: :meth:`batches` drains what is queued, then ends."""
        self._closed = True
        self._wake.set()

    async def batches(self) -> AsyncIterator[tuple[list[T], np.ndarray]]:
        """Async iterator of ``(windows, scores)`` in window order."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._queue) < self.batch_size and not self._closed:
                waited = time.monotonic() - self._queue[0][0]
                if waited < self.max_wait_s:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.max_wait_s - waited)
                    except TimeoutError:
                        pass
                    if len(self._queue) < self.batch_size and \
                            time.monotonic() - self._queue[0][0] < self.max_wait_s:
                        continue
            n = min(self.batch_size, len(self._queue))
            batch = [self._queue.popleft()[1] for _ in range(n)]
            if self.metrics is not None:
                self.metrics.backlog_seconds.set(self.backlog_s)
            started = time.perf_counter()
            scores = await loop.run_in_executor(self._executor, self._score, batch)
            if self.metrics is not None:
                self.metrics.batch_size.observe(n)
                self.metrics.inference_duration.observe(time.perf_counter() - started)
                self.metrics.windows_scored.inc(n)
            yield batch, scores

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
