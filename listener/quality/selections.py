"""Labelled stretches of a recording, and how overlapping ones combine.

Overlaps are normal (two animals calling at once, two analysts' boxes).
Selections of one class merge into their union. A call selection is never
shortened by a no-call one: where they overlap, the no-call selection keeps
only the time the call leaves uncovered (none, one or two pieces). So the
result is the same whatever the order of the rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selection:
    """A labelled stretch ``[start_s, end_s)`` of a recording; ``positive`` = calls in it."""

    start_s: float
    end_s: float
    positive: bool
    label: str
    line: int | None = None


def _overlaps(a: Selection, b: Selection) -> bool:
    return a.start_s < b.end_s and b.start_s < a.end_s


def _cut(sel: Selection, by: Selection) -> list[Selection]:
    """What of ``sel`` lies outside ``by``."""
    if not _overlaps(sel, by):
        return [sel]
    pieces = [replace(sel, end_s=by.start_s), replace(sel, start_s=by.end_s)]
    return [p for p in pieces if p.end_s > p.start_s]


def _merge(sels: list[Selection], new: Selection, file: str) -> Selection:
    """Add ``new`` as the union with the selections of its class it overlaps; that union."""
    for old in [o for o in sels if o.positive == new.positive and _overlaps(o, new)]:
        sels.remove(old)
        new = replace(old, start_s=min(old.start_s, new.start_s),
                      end_s=max(old.end_s, new.end_s))
        log.info("%s: overlapping selections merged into %g..%g s", file, new.start_s,
                 new.end_s)
    sels.append(new)
    return new


def add_selection(sels: list[Selection], new: Selection, file: str) -> None:
    """Add a non-empty ``new`` to ``sels`` (kept sorted by start), combining overlaps.

    ``file`` names the label file in the log.
    """
    if new.positive:
        call = _merge(sels, new, file)
        for noise in [o for o in sels if not o.positive and _overlaps(o, call)]:
            sels.remove(noise)
            sels.extend(_cut(noise, call))
            log.info("%s: no-call selection %g..%g s cut where a call selection overlaps it",
                     file, noise.start_s, noise.end_s)
    else:
        pieces = [new]
        for call in [o for o in sels if o.positive]:
            pieces = [q for p in pieces for q in _cut(p, call)]
        if pieces != [new]:
            log.info("%s: no-call selection %g..%g s cut where a call selection overlaps it",
                     file, new.start_s, new.end_s)
        for piece in pieces:
            _merge(sels, piece, file)
    sels.sort(key=lambda s: (s.start_s, not s.positive))
