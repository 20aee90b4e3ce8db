"""Readiness of a fleet: each station current or not, ready while a quorum is.

Kept apart from the HTTP server so that any server can serve it: ``/readyz``
answers with :func:`fleet_readiness`'s status and JSON body.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from listener.errors import ListenerError


@dataclass(frozen=True)
class StationHealth:
    """One station as ``/readyz`` reports it.

    ``state``: starting, running, restarting, failed, ended or stopped;
    ``current``: running with a segment newer than ``stale_after_s``.
    """

    station: str
    state: str
    current: bool
    reason: str
    last_segment_age_s: float | None = None
    windows_scored: int = 0
    restarts: int = 0
    last_error: dict[str, Any] | None = None  # LastError.to_json()


@dataclass
class LastError:
    """A station's last fetch error: what, since when (its streak), and whether it lasts.

    ``first_t``/``last_t`` are unix times; a successful fetch of the same kind
    ends the streak but keeps the record (the console shows what happened).
    """

    kind: str
    message: str
    first_t: float
    last_t: float
    active: bool = True

    def observe(self, ok: bool, kind: str, message: str, now: float) -> LastError | None:
        """The record after one fetch result (``self`` may be replaced)."""
        if ok:
            if kind == self.kind:
                self.active = False
            return self
        if self.active and kind == self.kind:  # the same outage, its latest words
            self.last_t, self.message = now, message
            return self
        return LastError(kind, message, now, now)

    def to_json(self, now: float) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "active": self.active,
                "for_s": round(self.last_t - self.first_t, 1),
                "age_s": round(now - self.last_t, 1)}

    def describe(self, now: float) -> str:
        """``"latest.txt: HTTP 404 for 3 min"`` (how an operator reads it)."""
        span = self.last_t - self.first_t
        lasting = f" for {_duration(span)}" if span >= 1 else ""
        ago = "" if self.active else f", {_duration(now - self.last_t)} ago"
        return f"{self.message}{lasting}{ago}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def parse_quorum(text: str, stations: int) -> int:
    """``"3"`` -> 3 stations; ``"50%"`` -> half of ``stations``, rounded up (at least 1).

    Raises:
        ListenerError: not a count or a percentage, or more than the stations.
    """
    value = text.strip()
    try:
        if value.endswith("%"):
            pct = float(value[:-1])
            if not 0 < pct <= 100:
                raise ValueError(value)
            count = max(1, math.ceil(stations * pct / 100.0))
        else:
            count = int(value)
    except ValueError as err:
        raise ListenerError(f"--quorum {text!r}: give a station count (e.g. 2) or a "
                            "percentage (e.g. 50%)") from err
    if not 1 <= count <= stations:
        raise ListenerError(f"--quorum {text}: must be 1..{stations} (the stations in "
                            "this process)")
    return count


def fleet_readiness(stations: Sequence[StationHealth], quorum: int,
                    process_state: str = "running") -> tuple[bool, dict[str, Any]]:
    """``(ready, body)``: ready when the process runs and >= ``quorum`` stations are current."""
    current = sum(1 for s in stations if s.current)
    ready = process_state == "running" and current >= quorum
    body = {
        "ready": ready,
        "state": process_state,
        "quorum": quorum,
        "current": current,
        "stations": {s.station: {k: v for k, v in asdict(s).items() if k != "station"}
                     for s in stations},
    }
    return ready, body
