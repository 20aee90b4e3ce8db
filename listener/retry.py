"""The one retry policy: jittered exponential backoff that honours ``Retry-After``.

Used by the segment/playlist fetcher (:mod:`listener.sources.http_client`)
and the webhook outbox (:mod:`listener.events.sinks.webhook`), so both wait
the same way and read ``Retry-After`` the same way (delta-seconds or an HTTP
date, capped at the policy's maximum). Both loops own their own waiting (a
thread that must wake on shutdown, an asyncio outbox worker), so this module
only computes delays; a retry library would have to wrap both loops for no gain.
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

from listener.numerals import ascii_int


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date).

    None when the header is absent or unreadable; a date in the past gives 0.
    """
    if not value:
        return None
    value = value.strip()
    seconds = ascii_int(value)
    if seconds is not None:
        return float(seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass
class Backoff:
    """Delay before retry number ``attempt`` (1-based).

    ``initial_s * 2**(attempt-1)`` capped at ``max_s``, times a jitter of
    50-100 % so that many stations recovering together do not retry in
    lockstep; a server's ``Retry-After`` raises the delay up to ``max_s``.
    """

    initial_s: float
    max_s: float
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        base = min(self.max_s, self.initial_s * 2 ** min(max(attempt, 1) - 1, 30))
        delay = base * (0.5 + 0.5 * self.rng.random())
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_s))
        return delay
