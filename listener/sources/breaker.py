"""A per-host circuit breaker for the HTTP client.

States, per host (``scheme://host:port``)::

    closed --(breaker_failures consecutive failed attempts)--> open
    open   --(breaker_reset_s elapsed)--> half-open: exactly one trial request
    half-open --trial succeeds--> closed ; --trial fails--> open again

Only failures that say something about the host count: connection errors,
timeouts, truncated bodies, 5xx and 429. A 404 or another 4xx proves the host
is up, so it resets the count like a success does. The breaker is shared by
the worker threads that ``HttpClient.aget`` uses, hence the lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _HostState:
    failures: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False


class CircuitBreaker:
    """Counts consecutive failures per host and refuses requests while open.

    Args:
        failures: consecutive failed attempts that open the circuit (>= 1).
        reset_s: seconds the circuit stays open before one trial is allowed.
        clock: monotonic clock in seconds; injectable for tests.
    """

    def __init__(self, failures: int, reset_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures}")
        if reset_s <= 0:
            raise ValueError(f"reset_s must be > 0, got {reset_s}")
        self._threshold = failures
        self._reset_s = reset_s
        self._clock = clock
        self._lock = threading.Lock()
        self._hosts: dict[str, _HostState] = {}

    def allow(self, host: str) -> float | None:
        """Ask to send one request to ``host``.

        Returns None when the request may go ahead, else the seconds until the
        circuit may be tried again. In the half-open state the first caller
        gets the single trial and the others are refused until it reports.
        """
        with self._lock:
            state = self._hosts.setdefault(host, _HostState())
            if state.opened_at is None:
                return None
            waited = self._clock() - state.opened_at
            if waited < self._reset_s:
                return self._reset_s - waited
            if state.trial_in_flight:
                # Another thread holds the half-open trial; refuse for a short
                # while rather than letting a burst through.
                return min(self._reset_s, 1.0)
            state.trial_in_flight = True
            return None

    def record_success(self, host: str) -> None:
        """The host answered (any response that proves it is alive)."""
        with self._lock:
            self._hosts[host] = _HostState()

    def record_failure(self, host: str) -> bool:
        """The host failed an attempt; returns True when the circuit is now open."""
        with self._lock:
            state = self._hosts.setdefault(host, _HostState())
            state.failures += 1
            if state.trial_in_flight or state.failures >= self._threshold:
                # A failed half-open trial re-opens at once: the host is still
                # down, and another full reset period must pass.
                state.opened_at = self._clock()
                state.trial_in_flight = False
                return True
            return False

    def release(self, host: str) -> None:
        """Give up a half-open trial without a verdict (e.g. the client stopped)."""
        with self._lock:
            state = self._hosts.get(host)
            if state is not None:
                state.trial_in_flight = False

    def is_open(self, host: str) -> bool:
        """True while requests to ``host`` are refused (for metrics and tests)."""
        with self._lock:
            state = self._hosts.get(host)
            if state is None or state.opened_at is None:
                return False
            return self._clock() - state.opened_at < self._reset_s
