"""Which columns of a Raven Pro selection table hold the annotation.

Raven adds measurement columns (``Peak Freq (Hz)``, ``Dur 90% (s)``,
``Begin Clock Time``, ``File Offset (s)`` ...) to a table as freely as the
analyst's own annotation columns, and in any order, so "the first column
Raven did not write" is often a measurement: a ``noise`` selection would be
read as a call labelled ``1200.5``. Named annotation columns are preferred;
otherwise a column counts only if it cannot be a measurement.
"""

from __future__ import annotations

import re

# In order of preference; matched case-insensitively.
ANNOTATION_NAMES = ("annotation", "label", "class", "call type", "sound type")
# Raven's own measurements carry a unit: "Peak Freq (Hz)", "Dur 90% (s)", "Energy (dB FS)".
_UNIT = re.compile(r"\([^)]*\)")
# Raven's unitless time and file columns: "Begin Clock Time", "Begin Date", "Begin Path" ...
_RAVEN_WORDS = re.compile(r"\b(clock|date|hour|path|file|offset)\b", re.IGNORECASE)
_RAVEN_PLAIN = frozenset({"selection", "view", "channel"})


def annotation_columns(header: list[str]) -> list[int]:
    """Indexes of the columns to read a selection's label from, best first.

    The named annotation columns (:data:`ANNOTATION_NAMES`) if the table has
    any; else every column that is neither one of Raven's (a unit in
    parentheses, a clock/date/path/file/offset column) nor Selection, View or
    Channel. Empty when no column can hold an annotation.
    """
    keys = [h.strip().lower() for h in header]
    named = [i for name in ANNOTATION_NAMES for i, k in enumerate(keys) if k == name]
    if named:
        return named
    return [i for i, (h, k) in enumerate(zip(header, keys, strict=True))
            if k and k not in _RAVEN_PLAIN and not _UNIT.search(h)
            and not _RAVEN_WORDS.search(h)]
