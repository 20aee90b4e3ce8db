"""The level of a live stream: RMS over its last seconds, in dB re full scale.

The model's spectrogram is not normalised, so a stream far quieter than the
audio a model trained at scores low whatever it holds, and a dead hydrophone
(digital silence, an amplifier gone) scores nothing at all without any
error. The level makes both visible (``listener_audio_level_dbfs``).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from listener.model.levels import trained_levels_dbfs

log = logging.getLogger(__name__)

#: What digital silence reads (log of zero): below any real hydrophone's noise floor.
FLOOR_DBFS = -120.0
#: At or below this a stream is silent: a live hydrophone's noise floor is far above it
#: (quiet Orcasound segments read -80 to -55). The ListenerAudioSilent alert uses it too.
SILENT_DBFS = -100.0


def level_dbfs(sum_squares: float, samples: int) -> float:
    """RMS of ``samples`` samples whose squares sum to ``sum_squares``, dB re 1.0."""
    if samples <= 0 or sum_squares <= 0.0:
        return FLOOR_DBFS
    return max(FLOOR_DBFS, 10.0 * math.log10(sum_squares / samples))


def window_levels_dbfs(waves: np.ndarray) -> np.ndarray:
    """Each row's RMS in dBFS (``(windows, samples)``): the level the recipe's gain sets."""
    power = np.einsum("ij,ij->i", waves, waves, dtype=np.float64) / max(waves.shape[-1], 1)
    with np.errstate(divide="ignore"):
        return np.maximum(FLOOR_DBFS, 10.0 * np.log10(power))


class LevelMeter:
    """RMS over the last ``span_s`` seconds of blocks (a loud minute is gone a span later)."""

    def __init__(self, span_s: float = 10.0) -> None:
        self.span_s = span_s
        self._blocks: deque[tuple[float, int, float]] = deque()  # sum of squares, samples, s
        self._held_s = 0.0

    def update(self, block: np.ndarray, rate: int) -> float:
        """Add a ``(channels, samples)`` or mono block; the level of the last ``span_s``."""
        samples = int(block.size)
        if samples:
            flat = block.reshape(-1)
            squares = float(np.dot(flat, flat.astype(np.float64)))
            seconds = block.shape[-1] / rate
            self._blocks.append((squares, samples, seconds))
            self._held_s += seconds
            # Keep the newest block even when it alone spans more than the span.
            while len(self._blocks) > 1 and self._held_s - self._blocks[0][2] >= self.span_s:
                self._held_s -= self._blocks.popleft()[2]
        return level_dbfs(sum(b[0] for b in self._blocks), sum(b[1] for b in self._blocks))


#: How long a stream's level must stay outside a model's range before it is reported.
OUTSIDE_HOLD_S = 60.0


@dataclass(frozen=True)
class LevelRange:
    """The window levels (dBFS) one model of a station trained at."""

    model: str
    low_dbfs: float
    high_dbfs: float

    @classmethod
    def of_weights(cls, model: str, weights: str | Path | None) -> LevelRange | None:
        """The range the recipe in ``weights`` records, or ``None`` (see
        :func:`~listener.model.levels.trained_levels_dbfs`)."""
        levels = trained_levels_dbfs(weights)
        return cls(model, *levels) if levels is not None else None

    @property
    def trained(self) -> str:
        """How logs and warnings name the range: ``the levels model M trained at (L to H dBFS)``."""
        return (f"the levels model {self.model} trained at "
                f"({self.low_dbfs:.0f} to {self.high_dbfs:.0f} dBFS)")

    def side(self, level_dbfs: float) -> str | None:
        """``"below"``, ``"above"`` or ``None`` (inside)."""
        if level_dbfs < self.low_dbfs:
            return "below"
        return "above" if level_dbfs > self.high_dbfs else None


    def outside_note(self, levels: Sequence[float]) -> str | None:
        """A line for ``detect`` and ``evaluate`` when a quarter or more of the windows are
        outside this range (silence not counted); ``None`` otherwise."""
        sides = [self.side(v) for v in levels if v > SILENT_DBFS]
        below, above = sides.count("below"), sides.count("above")
        if not levels or (below + above) * 4 < len(levels):
            return None
        counts = [(n, side) for n, side in ((below, "below"), (above, "above")) if n]
        where = f"{counts[0][0]} of {len(levels)} windows are {counts[0][1]}"
        if len(counts) == 2:
            where += f" and {counts[1][0]} {counts[1][1]}"
        return f"{where} {self.trained}: its scores there are untested"


@dataclass
class _Run:
    side: str | None = None  # where the level is now
    run_s: float = 0.0  # for how long (audio seconds)
    reported: str | None = None  # what was last said (and what the console shows)


class LevelWatch:
    """Says, in the log and the console, when a stream stays outside a model's levels.

    A model's scores are untested at levels it never trained at (the
    spectrogram is not normalised), so a station whose audio stays below or
    above a model's range for ``hold_s`` seconds of audio is logged once as a
    warning, and once more when it is back. Silence (:data:`SILENT_DBFS`) is
    not judged: ``ListenerAudioSilent`` covers a dead hydrophone.
    """

    def __init__(self, station: str, ranges: Sequence[LevelRange],
                 hold_s: float = OUTSIDE_HOLD_S) -> None:
        self.station = station
        self.ranges = tuple(ranges)
        self.hold_s = hold_s
        self._runs = {r.model: _Run() for r in self.ranges}

    def update(self, level_dbfs: float, seconds: float) -> None:
        """The level after ``seconds`` more audio (:meth:`LevelMeter.update`)."""
        if level_dbfs <= SILENT_DBFS:
            return
        for r in self.ranges:
            run = self._runs[r.model]
            side = r.side(level_dbfs)
            if side != run.side:
                run.side, run.run_s = side, 0.0
            run.run_s += seconds
            if run.run_s >= self.hold_s and run.reported != side:
                self._report(r, side, level_dbfs)
                run.reported = side

    def outside(self) -> tuple[tuple[LevelRange, str], ...]:
        """The models the stream is (reported) outside of, with the side."""
        return tuple((r, side) for r in self.ranges
                     if (side := self._runs[r.model].reported) is not None)

    def _report(self, r: LevelRange, side: str | None, level: float) -> None:
        if side is None:
            log.info("station %s: the audio level (%.0f dBFS) is back within %s",
                     self.station, level, r.trained)
            return
        log.warning("station %s: the audio level has stayed %s %s for %.0f s, now %.0f dBFS: "
                    "its scores at this level are untested (docs/operations.md, "
                    "ListenerAudioOutsideModelLevels)", self.station, side, r.trained,
                    self.hold_s, level)
