"""Whole numbers written in untrusted text: ASCII digits, and not too many.

``str.isdigit`` is true for superscripts ("¹") and other scripts' digits,
which ``int`` then rejects with a ValueError, and ``int`` refuses strings of
more than 4 300 digits. A playlist's media sequence, a ``Retry-After``
header, an archive folder name or a weights file's member index that holds
either must read as "not a number", never as a crash (a Hypothesis fuzz run
found ``#EXT-X-MEDIA-SEQUENCE:¹``).
"""

from __future__ import annotations

#: More digits than any count or time this project reads (int64 has 19).
MAX_DIGITS = 18


def ascii_int(text: str, max_digits: int = MAX_DIGITS) -> int | None:
    """``int(text)`` when ``text`` is 1 to ``max_digits`` ASCII digits 0-9, else None."""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None
