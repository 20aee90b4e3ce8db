"""A station's last fetch error: one outage is one streak, whatever its words."""

from __future__ import annotations

from listener.runtime.readiness import LastError


def test_an_outage_is_one_streak_and_a_success_ends_it() -> None:
    err = LastError("playlist", "latest.txt: connection refused", 1000.0, 1000.0)
    # The breaker opens: other words, the same outage.
    same = err.observe(False, "playlist", "latest.txt: circuit open", 1180.0)
    assert same is err and same.to_json(1180.0)["for_s"] == 180.0
    assert same.describe(1180.0) == "latest.txt: circuit open for 3 min"
    assert err.observe(True, "segment", "x.ts: ok", 1190.0) is err and err.active
    ended = err.observe(True, "playlist", "latest.txt: ok", 1200.0)
    assert ended is err and not err.active
    assert err.describe(1500.0) == "latest.txt: circuit open for 3 min, 5 min ago"
    fresh = err.observe(False, "playlist", "latest.txt: HTTP 404", 1600.0)
    assert fresh is not err and fresh.to_json(1600.0)["for_s"] == 0.0
