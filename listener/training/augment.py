"""Example makers and augmentations, the ones bioacoustics detectors use.

Waveform side (numpy, per example, driven by one ``np.random.Generator``):
a call is cut to at most one window (the loudest of a few random crops, so a
long file's silences are not labelled "call"), shifted to a random offset in
the window, mixed into background at a random signal-to-noise ratio, and the
sum given a random gain. Background is a crop of a background file, or
coloured noise (1/f^a, a in [0, 2]) standing in for hydrophone noise.
Spectrogram side (torch, per batch): SpecAugment-style frequency and time masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from listener.training.data import Recording


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of every augmentation (defaults: the demo model's recipe)."""

    snr_db: tuple[float, float] = (-3.0, 20.0)
    gain_db: tuple[float, float] = (-20.0, 10.0)
    noise_background_p: float = 0.3  # background from coloured noise instead of a file
    freq_masks: int = 2
    freq_mask_max: int = 24  # mel bins
    time_masks: int = 2
    time_mask_max: int = 30  # frames

    def to_json(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def crop(wave: np.ndarray, n: int, rng: np.random.Generator, loudest_of: int = 1) -> np.ndarray:
    """``n`` samples of ``wave`` (zero-padded if shorter); the loudest of a few random crops."""
    if wave.size <= n:
        return np.pad(wave, (0, n - wave.size))
    best, best_rms = wave[:n], -1.0
    for _ in range(loudest_of):
        start = int(rng.integers(0, wave.size - n + 1))
        piece = wave[start:start + n]
        level = rms(piece)
        if level > best_rms:
            best, best_rms = piece, level
    return best


def coloured_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a 1/f^a power spectrum, a uniform in [0, 2]."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    spectrum /= f ** (rng.uniform(0.0, 2.0) / 2)
    out = np.fft.irfft(spectrum, n)
    return (out / (rms(out) + 1e-12) * 0.01).astype(np.float32)


def background(backgrounds: list[Recording], n: int, rng: np.random.Generator,
               cfg: AugmentConfig) -> np.ndarray:
    if not backgrounds or rng.random() < cfg.noise_background_p:
        return coloured_noise(n, rng)
    rec = backgrounds[int(rng.integers(0, len(backgrounds)))]
    piece = crop(rec.wave, n, rng)
    if rec.wave.size < n:  # a short background file: fill the rest with noise
        piece = piece + coloured_noise(n, rng) * rms(rec.wave) * 0.1
    return piece


def positive_example(call: Recording, backgrounds: list[Recording], n: int,
                     rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """A call at a random offset, mixed into background at a random SNR, random gain."""
    piece = crop(call.wave, n, rng, loudest_of=4)
    # Trim to the call's own length (if short), then shift it somewhere in the window.
    nonzero = np.flatnonzero(piece)
    length = int(nonzero[-1]) + 1 if nonzero.size else n
    shifted = np.zeros(n, dtype=np.float32)
    offset = int(rng.integers(0, n - length + 1))
    shifted[offset:offset + length] = piece[:length]
    bg = background(backgrounds, n, rng, cfg)
    snr = rng.uniform(*cfg.snr_db)
    bg = bg * (rms(shifted) / (rms(bg) * 10 ** (snr / 20)))
    return _gain(shifted + bg, rng, cfg)


def negative_example(backgrounds: list[Recording], n: int, rng: np.random.Generator,
                     cfg: AugmentConfig) -> np.ndarray:
    return _gain(background(backgrounds, n, rng, cfg), rng, cfg)


def _gain(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    # Normalise to a typical hydrophone level first, so the gain range means
    # the same for quiet catalogue files and loud ones.
    level = 0.05 * 10 ** (rng.uniform(*cfg.gain_db) / 20)
    return (x * (level / rms(x))).astype(np.float32)


def spec_masks(spec: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    """Frequency and time masks on ``(batch, 1, n_mels, frames)``, filled with each item's mean."""
    out = spec.clone()
    batch, _, n_mels, frames = out.shape
    means = out.mean(dim=(1, 2, 3))
    for b in range(batch):
        for size_max, count, axis_len, axis in ((cfg.freq_mask_max, cfg.freq_masks, n_mels, 2),
                                                (cfg.time_mask_max, cfg.time_masks, frames, 3)):
            for _ in range(count):
                width = int(torch.randint(0, size_max + 1, (1,), generator=gen))
                start = int(torch.randint(0, max(axis_len - width, 0) + 1, (1,), generator=gen))
                if axis == 2:
                    out[b, :, start:start + width, :] = means[b]
                else:
                    out[b, :, :, start:start + width] = means[b]
    return out
