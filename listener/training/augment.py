"""Example makers and augmentations that make clean clips sound like a live hydrophone stream.

Waveform side (numpy, per example, driven by one ``np.random.Generator``):

* a *bed* is a crop of a background file (hydrophone and recorder noise, a
  station's own audio from ``--background``) or, rarely, coloured noise;
* a call (the loudest of a few random crops of a call file, so a long file's
  silences are not labelled "call") is shifted to a random offset and mixed
  into a bed at a random signal-to-noise ratio, measured over the call's own
  extent;
* a negative is a bed alone or a bed carrying a non-orca sound (another
  background file: humpbacks, ships, sonar, ...) mixed in exactly as calls
  are, so "something was mixed in" never tells the classes apart;
* both classes take the same AAC round trips (48 kHz AAC-LC, precomputed per
  file by :mod:`listener.training.cache`), random band limits and gain.

Spectrogram side (torch, per batch): SpecAugment-style frequency and time masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from listener.errors import ListenerError
from listener.model.levels import REFERENCE_RMS
from listener.training.data import Recording, SourcePool


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of every augmentation (defaults: the demo model's recipe)."""

    snr_db: tuple[float, float] = (-10.0, 15.0)
    # Window level, dB re 0.05 RMS. The daemon's dB spectrogram is not
    # normalised, so a level the model never trained at shifts its scores:
    # -55..+25 spans the 2 s windows of the live Orcasound segments we hold
    # (-53 and -31 dB quiet, +24 loud) and the hydrophone and recorder
    # sources of train/ (scripts/level_survey.py).
    gain_db: tuple[float, float] = (-55.0, 25.0)
    noise_background_p: float = 0.1  # bed of coloured noise instead of a file
    event_p: float = 0.5  # a negative carries a non-orca sound mixed into its bed
    aac_p: float = 0.6  # use an AAC round trip of each file
    lowpass_p: float = 0.3
    lowpass_hz: tuple[float, float] = (3500.0, 9500.0)
    highpass_p: float = 0.3
    highpass_hz: tuple[float, float] = (50.0, 1000.0)
    # A random smooth equaliser (hydrophones, preamplifiers and housings colour
    # the sound differently): the gain at each of EQ_ANCHORS_HZ is drawn within
    # +-eq_db, interpolated in log frequency. 0 (the default): off.
    eq_db: float = 0.0
    eq_p: float = 0.5
    source_power: float = 0.25  # source weight = files ** power (0: sources equal)
    freq_masks: int = 2
    freq_mask_max: int = 24  # mel bins
    time_masks: int = 2
    time_mask_max: int = 30  # frames

    def __post_init__(self) -> None:
        for name in ("snr_db", "gain_db", "lowpass_hz", "highpass_hz"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ListenerError(f"--{name.replace('_', '-')} {lo:g} {hi:g}: the low end "
                                    "exceeds the high end")
        if not 0 <= self.eq_db <= 40:
            raise ListenerError(f"--eq-db {self.eq_db:g}: must be 0 (off) to 40 dB")

    def to_json(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def crop(wave: np.ndarray, n: int, rng: np.random.Generator, loudest_of: int = 1) -> np.ndarray:
    """``n`` float32 samples of ``wave`` (zero-padded if shorter); the loudest of a few crops."""
    if wave.size <= n:
        return np.pad(wave.astype(np.float32), (0, n - wave.size))
    best, best_rms = wave[:n], -1.0
    for _ in range(loudest_of):
        start = int(rng.integers(0, wave.size - n + 1))
        piece = wave[start:start + n]
        level = rms(piece)
        if level > best_rms:
            best, best_rms = piece, level
    return best.astype(np.float32)


def coloured_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a 1/f^a power spectrum, a uniform in [0, 2]."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    spectrum /= f ** (rng.uniform(0.0, 2.0) / 2)
    out = np.fft.irfft(spectrum, n)
    return (out / (rms(out) + 1e-12) * 0.01).astype(np.float32)


def bed(beds: SourcePool, n: int, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """A window of background: a crop of a bed file, or coloured noise."""
    if not beds or rng.random() < cfg.noise_background_p:
        return coloured_noise(n, rng)
    rec = beds.draw(rng)
    wave = rec.version(rng, cfg.aac_p)
    piece = crop(wave, n, rng)
    if wave.size < n:  # a short background file: fill the rest with quiet noise
        piece = piece + coloured_noise(n, rng) * (rms(wave) * 10.0)
    return piece


def placed(rec: Recording, n: int, rng: np.random.Generator,
           cfg: AugmentConfig) -> tuple[np.ndarray, float]:
    """A sound at a random offset in a silent window, and its RMS over its own extent."""
    piece = crop(rec.version(rng, cfg.aac_p), n, rng, loudest_of=4)
    nonzero = np.flatnonzero(piece)
    length = int(nonzero[-1]) + 1 if nonzero.size else n
    out = np.zeros(n, dtype=np.float32)
    offset = int(rng.integers(0, n - length + 1))
    out[offset:offset + length] = piece[:length]
    return out, rms(piece[:length])


def mix(sound: np.ndarray, level: float, into: np.ndarray, rng: np.random.Generator,
        cfg: AugmentConfig) -> np.ndarray:
    """``sound`` (RMS ``level`` over its extent) into ``into`` at a random SNR."""
    snr = rng.uniform(*cfg.snr_db)
    scale = rms(into) * 10 ** (snr / 20) / max(level, 1e-12)
    return into + sound * np.float32(scale)


def positive_example(call: Recording, beds: SourcePool, n: int,
                     rng: np.random.Generator, cfg: AugmentConfig, *, rate: int) -> np.ndarray:
    """A call at a random offset, mixed into a bed at a random SNR, then the channel effects
    (``rate``: the audio's sample rate, the frontend's)."""
    sound, level = placed(call, n, rng, cfg)
    return channel(mix(sound, level, bed(beds, n, rng, cfg), rng, cfg), rng, cfg, rate=rate)


def negative_example(beds: SourcePool, n: int, rng: np.random.Generator,
                     cfg: AugmentConfig, *, rate: int) -> np.ndarray:
    """A bed, often carrying another background sound mixed in as a call would be."""
    x = bed(beds, n, rng, cfg)
    if beds and rng.random() < cfg.event_p:
        sound, level = placed(beds.draw(rng), n, rng, cfg)
        x = mix(sound, level, x, rng, cfg)
    return channel(x, rng, cfg, rate=rate)


#: Where the equaliser's gains are drawn, two octaves apart over the model's band.
EQ_ANCHORS_HZ = (100.0, 400.0, 1600.0, 6400.0)


def band_limit(x: np.ndarray, rate: int, rng: np.random.Generator,
               cfg: AugmentConfig) -> np.ndarray:
    """Random 4th-order low- and high-pass magnitude responses and a random equaliser
    (hydrophones and codecs differ), in one FFT."""
    lp, hp = rng.random() < cfg.lowpass_p, rng.random() < cfg.highpass_p
    eq = cfg.eq_db > 0 and rng.random() < cfg.eq_p
    if not (lp or hp or eq):
        return x
    spectrum = np.fft.rfft(x)
    f = np.fft.rfftfreq(x.size, 1.0 / rate)
    gain = np.ones_like(f)
    if lp:
        gain /= np.sqrt(1 + (f / rng.uniform(*cfg.lowpass_hz)) ** 8)
    if hp:
        gain /= np.sqrt(1 + (rng.uniform(*cfg.highpass_hz) / np.maximum(f, 1e-3)) ** 8)
    if eq:
        gain *= eq_gain(f, rng.uniform(-cfg.eq_db, cfg.eq_db, len(EQ_ANCHORS_HZ)))
    return np.fft.irfft(spectrum * gain, x.size).astype(np.float32)


def eq_gain(f: np.ndarray, anchors_db: np.ndarray) -> np.ndarray:
    """The equaliser's amplitude gain at ``f`` Hz: ``anchors_db`` at :data:`EQ_ANCHORS_HZ`,
    interpolated in log frequency, flat beyond the outer anchors."""
    return 10 ** (np.interp(np.log2(np.maximum(f, 1.0)), np.log2(EQ_ANCHORS_HZ),
                            anchors_db) / 20)


def channel(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig, *,
            rate: int) -> np.ndarray:
    """Band limits (their corners in Hz at ``rate``, the audio's sample rate), then a random
    window level within the live streams' range."""
    x = band_limit(x, rate, rng, cfg)
    # Normalise first, so the gain range means the same for quiet catalogue
    # files and loud ones.
    level = REFERENCE_RMS * 10 ** (rng.uniform(*cfg.gain_db) / 20)
    return (x * (level / rms(x))).astype(np.float32)


def spec_masks(spec: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    """Frequency and time masks on ``(batch, 1, n_mels, frames)``, filled with each item's mean."""
    out = spec.clone()
    batch, _, n_mels, frames = out.shape
    means = out.mean(dim=(1, 2, 3))
    for b in range(batch):
        for size_max, count, axis_len, axis in ((cfg.freq_mask_max, cfg.freq_masks, n_mels, 2),
                                                (cfg.time_mask_max, cfg.time_masks, frames, 3)):
            # At most an eighth of the axis, so a small frontend keeps most of its input
            # (the production 256 x 312 input is not affected).
            size_max = min(size_max, axis_len // 8)
            for _ in range(count):
                width = int(torch.randint(0, size_max + 1, (1,), generator=gen))
                start = int(torch.randint(0, max(axis_len - width, 0) + 1, (1,), generator=gen))
                if axis == 2:
                    out[b, :, start:start + width, :] = means[b]
                else:
                    out[b, :, :, start:start + width] = means[b]
    return out
