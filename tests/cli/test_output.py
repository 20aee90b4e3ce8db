"""How the file commands print times."""

from __future__ import annotations

import pytest

from listener.cli.output import fmt_time


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0, "0:00.0"), (59.94, "0:59.9"), (59.96, "1:00.0"), (119.97, "2:00.0"),
    (3599.96, "1:00:00.0"), (3725.04, "1:02:05.0"),
])
def test_fmt_time_rounds_before_carrying_into_minutes(seconds: float, text: str) -> None:
    assert fmt_time(seconds) == text
