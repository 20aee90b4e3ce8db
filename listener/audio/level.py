"""The level of a live stream: RMS over its last seconds, in dB re full scale.

The model's spectrogram is not normalised, so a stream far quieter than the
audio a model trained at scores low whatever it holds, and a dead hydrophone
(digital silence, an amplifier gone) scores nothing at all without any
error. The level makes both visible (``listener_audio_level_dbfs``).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

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
