"""Decoded audio -> overlapping, timestamped windows (pure, no I/O).

Windows sit on a fixed grid of the stream's timeline: window ``k`` starts at
stream offset ``k * hop_s``, whatever audio arrived first. A replay that starts
mid-stream and the live daemon therefore cut identical windows. Positions are
kept in integer samples, so a week-long stream does not drift.

Non-finite samples (NaN, Inf: a float WAV can carry them) become 0 here, the
one place every job's windows are assembled: one such sample would otherwise
make its whole window's spectrogram, and so its score, NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from listener.model.dsp import downmix


def zero_nonfinite(samples: np.ndarray) -> tuple[np.ndarray, int]:
    """``samples`` with NaN and ±Inf set to 0, and how many there were.

    Finite input comes back as the same array, untouched (bit-identical scores).
    """
    finite = np.isfinite(samples)
    if finite.all():
        return samples, 0
    return np.where(finite, samples, 0).astype(samples.dtype, copy=False), int(
        finite.size - np.count_nonzero(finite))


@dataclass(frozen=True)
class Window:
    """One window of mono audio at its native rate.

    ``start_s``/``end_s`` are offsets in the stream (file) timeline; ``utc``
    is the wall-clock time of its first sample when the stream has one.
    """

    start_s: float
    end_s: float
    samples: np.ndarray  # (n,) float32, native rate
    sample_rate: int
    utc: datetime | None = None


class WindowCutter:
    """A ring buffer that cuts windows as audio arrives.

    Call :meth:`reset` at the start of a stream and after every discontinuity
    (a gap, a node restart, a rate change) with the stream offset of the next
    sample and the UTC of offset 0; then :meth:`push` decoded blocks in order.
    """

    def __init__(self, window_s: float, hop_s: float) -> None:
        if hop_s <= 0 or window_s <= 0:
            raise ValueError(f"window_s and hop_s must be positive, got {window_s}, {hop_s}")
        self.window_s = window_s
        self.hop_s = hop_s
        self.sample_rate = 0
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # absolute sample index of _buf[0]
        self._next_k = 0  # grid index of the next window to cut
        self._utc_origin: datetime | None = None
        self.nonfinite_samples = 0  # set to 0 by push, since construction

    @property
    def position_s(self) -> float:
        """Stream offset just past the last sample received."""
        if not self.sample_rate:
            return 0.0
        return (self._buf_start + self._buf.size) / self.sample_rate

    @property
    def buffered_s(self) -> float:
        return self._buf.size / self.sample_rate if self.sample_rate else 0.0

    def reset(self, offset_s: float, sample_rate: int, utc_origin: datetime | None) -> None:
        """Start afresh at stream offset ``offset_s`` (audio before it is dropped)."""
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = round(offset_s * sample_rate)
        self._next_k = math.ceil(offset_s / self.hop_s - 1e-9)
        self._utc_origin = utc_origin

    def push(self, block: np.ndarray) -> list[Window]:
        """Append a decoded block, (channels, n) or (n,), and cut the windows it completes."""
        if not self.sample_rate:
            raise RuntimeError("WindowCutter.push before reset()")
        mono, bad = zero_nonfinite(downmix(block))
        self.nonfinite_samples += bad
        self._buf = np.concatenate([self._buf, mono]) if self._buf.size else mono
        out: list[Window] = []
        sr = self.sample_rate
        win = round(self.window_s * sr)
        while True:
            start = round(self._next_k * self.hop_s * sr)
            lo = start - self._buf_start
            if lo + win > self._buf.size:
                break
            if lo >= 0:
                out.append(self._window(start, self._buf[lo:lo + win].copy()))
            self._next_k += 1
        keep_from = min(round(self._next_k * self.hop_s * sr) - self._buf_start, self._buf.size)
        if keep_from > 0:
            self._buf = self._buf[keep_from:]
            self._buf_start += keep_from
        return out

    def tail(self) -> Window | None:
        """What is left after the last full window, as a short window (end of a file)."""
        if not self._buf.size:
            return None
        return self._window(self._buf_start, self._buf.copy())

    def _window(self, start: int, samples: np.ndarray) -> Window:
        sr = self.sample_rate
        start_s = start / sr
        utc = None
        if self._utc_origin is not None:
            utc = self._utc_origin + timedelta(seconds=start_s)
        return Window(start_s, start_s + samples.size / sr, samples, sr, utc)
