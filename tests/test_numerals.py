"""listener.numerals: whole numbers in untrusted text."""

from __future__ import annotations

import pytest

from listener.numerals import MAX_DIGITS, ascii_int


@pytest.mark.parametrize("text, expected", [
    ("0", 0), ("42", 42), ("007", 7), ("9" * MAX_DIGITS, int("9" * MAX_DIGITS)),
    ("", None), (" 1", None), ("-1", None), ("+1", None), ("1.0", None), ("1e3", None),
    ("\u00b9", None),        # superscript one: str.isdigit is true, int() raises
    ("\u0663", None),        # Arabic-Indic three: int() would read it as 3
    ("9" * (MAX_DIGITS + 1), None), ("9" * 5000, None),  # int() refuses 4 301 digits and more
])
def test_only_ascii_digits_read_as_a_number(text: str, expected: int | None) -> None:
    assert ascii_int(text) == expected


def test_a_caller_may_allow_fewer_digits() -> None:
    assert ascii_int("12", max_digits=2) == 12
    assert ascii_int("123", max_digits=2) is None
