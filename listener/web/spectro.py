"""Spectrogram columns for the live view: small, on a fixed loudness scale.

Each column is ``bins`` bytes (0..255 over ``[floor_db, floor_db + range_db]``
dBFS, lowest frequency first) covering ``1 / cols_per_s`` seconds, 0 to
``f_max_hz``. A fixed scale (not per-picture normalisation as in the clip
pictures) keeps columns sent at different times comparable as they scroll.
At the defaults a second of audio is 8 columns of 96 bytes: under 1 KiB/s
per viewer after base64, whatever the stream's rate.
"""

from __future__ import annotations

import numpy as np

#: Columns transformed at once: bounds the transient arrays (a 60 s backfill
#: at 48 kHz in one go made about 100 MB of them; 32 columns make about 7 MB).
BLOCK_COLS = 32


def columns(samples: np.ndarray, sample_rate: int, *, cols_per_s: int = 8, bins: int = 96,
            f_max_hz: float = 10_000.0, floor_db: float = -110.0,
            range_db: float = 80.0) -> np.ndarray:
    """``(n_cols, bins)`` uint8 for ``samples``; a trailing partial column is dropped."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    step = sample_rate // cols_per_s
    n_cols = x.size // step if step > 0 else 0
    out = np.zeros((n_cols, bins), dtype=np.uint8)
    for first in range(0, n_cols, BLOCK_COLS):
        last = min(n_cols, first + BLOCK_COLS)
        out[first:last] = _block(x[first * step:last * step].reshape(last - first, step),
                                 sample_rate, bins, f_max_hz, floor_db, range_db)
    return out


def _block(usable: np.ndarray, sample_rate: int, bins: int, f_max_hz: float,
           floor_db: float, range_db: float) -> np.ndarray:
    n_cols, step = usable.shape
    n_fft = 1 << max(8, int(np.ceil(np.log2(step))))
    frames = np.zeros((n_cols, n_fft), dtype=np.float32)
    frames[:, :min(step, n_fft)] = usable[:, :n_fft]
    window = np.zeros(n_fft, dtype=np.float32)
    window[:min(step, n_fft)] = np.hanning(min(step, n_fft))
    spec = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2 / (window.sum() ** 2 / 4)
    f_max = min(f_max_hz, sample_rate / 2)
    top = max(2, int(f_max * n_fft / sample_rate) + 1)
    edges = np.linspace(0, top, bins + 1).astype(np.int64)
    edges[1:] = np.maximum(edges[1:], edges[:-1] + 1)
    edges = np.minimum(edges, spec.shape[1] - 1)
    power = np.add.reduceat(spec[:, :top + 1], edges[:-1], axis=1)[:, :bins]
    power /= np.maximum(1, np.diff(edges))[None, :bins]
    db = 10.0 * np.log10(np.maximum(power, 1e-20))
    level = np.clip((db - floor_db) / range_db, 0.0, 1.0)
    return np.rint(level * 255).astype(np.uint8)
