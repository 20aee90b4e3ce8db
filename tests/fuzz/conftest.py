"""Fuzzing with Hypothesis: no example database on disk, bounded so the run stays short.

Each target gets generated input; the only outcomes allowed are a result or
one of listener's own errors with a message (``listener.errors``), never
another exception. ``pytest tests/fuzz --hypothesis-show-statistics`` shows
how many inputs each target saw.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "listener-fuzz", database=None, deadline=None, derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
