"""``listener train --time-budget``: lengths parsed, nonsense refused by name."""

from __future__ import annotations

import pytest

from listener.errors import ListenerError
from listener.training.run import parse_duration


def test_time_budget_is_a_positive_finite_length() -> None:
    assert parse_duration("45m") == 2700.0 and parse_duration(" 90 ") == 90.0
    for bad in ("nan", "inf", "-inf", "infh", "nanm", "0", "-5s"):
        with pytest.raises(ListenerError, match=rf"--time-budget '{bad}'"):
            parse_duration(bad)
