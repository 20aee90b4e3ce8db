"""The fetch deadlines: one thread per client keeps them all, in time, cancellable."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import requests

from listener.sources.deadline import DeadlineWatch


class _Resp:
    """A response without a socket: the deadline closes it."""

    raw = None

    def __init__(self) -> None:
        self.closed_at: float | None = None

    def close(self) -> None:
        self.closed_at = time.monotonic()


def test_one_thread_fires_each_deadline_in_time_and_cancelled_ones_never() -> None:
    watch = DeadlineWatch()
    started = time.monotonic()
    before = threading.active_count()
    resps = [_Resp() for _ in range(3)]
    late, soon, cancelled = (watch.watch(cast(requests.Response, r), after)
                             for r, after in zip(resps, (0.4, 0.1, 0.2), strict=True))
    assert threading.active_count() == before + 1  # one thread for every deadline
    cancelled.cancel()
    time.sleep(0.7)
    assert soon.expired and late.expired and not cancelled.expired
    closed: list[Any] = [r.closed_at for r in resps]
    assert closed[2] is None
    assert 0.08 <= closed[1] - started < closed[0] - started
    assert closed[0] - started >= 0.38
    watch.close()
