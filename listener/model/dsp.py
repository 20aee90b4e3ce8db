"""The maths of the mel-spectrogram frontend, as pure functions.

Each function reproduces one step of the pipeline the OrcaHello model was
trained with (fastai_audio over torchaudio 0.x, see
``docs/frontend.md``): downmix, per-window polyphase resampling, a periodic
Hann STFT power spectrogram, an HTK mel filterbank without area
normalisation, power to dB with a per-item ``top_db`` floor, and padding or
cropping to a fixed number of frames. :class:`listener.model.frontend.Frontend`
holds the buffers and calls these in order.

No function here keeps state or chooses a device: tensors come out on the
device of the tensors that go in.
"""

from __future__ import annotations

import logging
import math
from math import gcd

import numpy as np
import scipy.signal
import torch
from torch import Tensor

log = logging.getLogger(__name__)

#: Power below this is clamped before the log, as torchaudio's AmplitudeToDB did.
AMIN = 1e-10


def downmix(x: np.ndarray) -> np.ndarray:
    """Average the channels of one block of audio.

    Args:
        x: ``(channels, samples)`` or ``(samples,)``, any real dtype.

    Returns:
        ``(samples,)`` float32: the mean over channels (a copy of ``x`` as
        float32 when it is already mono).
    """
    if x.ndim == 1:
        return np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected audio of shape (channels, samples) or (samples,), "
                         f"got shape {x.shape}")
    # Mean in float32 like the old torch pipeline, not numpy's float64 default.
    return np.asarray(x, dtype=np.float32).mean(axis=0, dtype=np.float32)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample with ``scipy.signal.resample_poly`` as the old pipeline did.

    ``up/down`` is ``sr_out/sr_in`` reduced by their gcd (48 000 -> 20 000 is
    5/12) and scipy's default Kaiser window is used, so the numbers match the
    training pipeline's exactly.

    Args:
        x: ``(..., samples)``; resampled along the last axis.
        sr_in: the rate of ``x`` in Hz.
        sr_out: the wanted rate in Hz.

    Returns:
        float32 array of shape ``(..., ceil(samples * up / down))``; ``x`` as
        float32 unchanged when the rates are equal.
    """
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    g = gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    y = scipy.signal.resample_poly(x, up, down, axis=-1)
    return np.asarray(y, dtype=np.float32)


def hann_window(n: int) -> Tensor:
    """The periodic Hann window torch.stft was given: ``(n,)`` float32."""
    return torch.hann_window(n, periodic=True, dtype=torch.float32)


def stft_power(wave: Tensor, n_fft: int, hop_length: int, win_length: int,
               window: Tensor) -> Tensor:
    """Power spectrogram ``|STFT|^2``, centred with reflect padding, onesided.

    Args:
        wave: ``(batch, samples)`` float32; ``samples`` must exceed
            ``n_fft // 2`` (reflect padding needs that much signal).
        n_fft, hop_length, win_length: STFT sizes in samples.
        window: ``(win_length,)`` float32 on the device of ``wave``.

    Returns:
        ``(batch, n_fft // 2 + 1, 1 + samples // hop_length)`` float32.
    """
    if wave.dim() != 2:
        raise ValueError(f"expected wave of shape (batch, samples), got {tuple(wave.shape)}")
    if wave.shape[-1] <= n_fft // 2:
        raise ValueError(f"a window of {wave.shape[-1]} samples is too short for "
                         f"n_fft={n_fft} (needs more than {n_fft // 2})")
    spec = torch.stft(wave, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
                      window=window, center=True, pad_mode="reflect", normalized=False,
                      onesided=True, return_complex=True)
    # abs().pow(2) rather than real**2 + imag**2: torchaudio's order of
    # operations, so the float32 rounding matches the golden outputs.
    return spec.abs().pow(2.0)


def _hz_to_mel(freq: float) -> float:
    return 2595.0 * math.log10(1.0 + freq / 700.0)


def _mel_to_hz(mels: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int,
                   sample_rate: int) -> Tensor:
    """Triangular HTK mel filters, no area normalisation.

    The same numbers as ``torchaudio.functional.melscale_fbanks(...,
    norm=None, mel_scale="htk")``: the ``n_freqs`` FFT bins are labelled
    linearly from 0 to ``sample_rate // 2`` Hz, whatever the audio's real
    rate. Giving 16 000 for 20 kHz audio (the trained model's quirk) leaves
    the filters centred above 8 000 Hz empty.

    Args:
        n_freqs: number of onesided FFT bins (``n_fft // 2 + 1``).
        f_min, f_max: edges of the lowest and highest filter in Hz.
        n_mels: number of filters.
        sample_rate: the rate the FFT bins are labelled with.

    Returns:
        ``(n_freqs, n_mels)`` float32; ``spec.mT @ fb`` maps power to mel.
    """
    if n_freqs <= 0 or n_mels <= 0:
        raise ValueError(f"n_freqs and n_mels must be positive, got {n_freqs}, {n_mels}")
    if not 0.0 <= f_min < f_max:
        raise ValueError(f"need 0 <= f_min < f_max, got f_min={f_min}, f_max={f_max}")
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    mel_pts = torch.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
    f_pts = _mel_to_hz(mel_pts)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.clamp(torch.minimum(down, up), min=0.0)
    empty = int((fb.max(dim=0).values == 0.0).sum())
    if empty:
        # Expected with the trained model's 16 kHz labelling; say so once per build.
        log.debug("mel filterbank: %d of %d filters are empty (labelled rate %d Hz, "
                  "f_max %.0f Hz)", empty, n_mels, sample_rate, f_max)
    return fb


def power_to_db(power: Tensor, top_db: float | None) -> Tensor:
    """``10 * log10(max(power, 1e-10))`` (reference 1.0) with a per-item floor.

    Each item is then clamped from below at its own maximum minus ``top_db``.
    The maximum is taken over that item's mel bins and frames, never over the
    batch, so a window's dB image does not depend on what it is batched with.

    Args:
        power: ``(batch, n_mels, frames)`` float32, non-negative.
        top_db: dynamic range kept below each item's peak, in dB; ``None``
            for no floor.

    Returns:
        ``(batch, n_mels, frames)`` float32 in dB.
    """
    if power.dim() != 3:
        raise ValueError(f"expected power of shape (batch, n_mels, frames), "
                         f"got {tuple(power.shape)}")
    db = 10.0 * torch.log10(torch.clamp(power, min=AMIN))
    if top_db is None:
        return db
    floor = db.amax(dim=(-2, -1), keepdim=True) - top_db
    return torch.maximum(db, floor)


def fit_frames(spec: Tensor, frames: int, value: float = 0.0) -> Tensor:
    """Pad at the end with ``value``, or crop to the first ``frames`` frames.

    Args:
        spec: ``(..., n_mels, time)``.
        frames: the wanted length of the last axis.
        value: what padding frames hold (fastai padded dB images with 0.0).

    Returns:
        ``(..., n_mels, frames)``, same dtype and device as ``spec``.
    """
    if frames <= 0:
        raise ValueError(f"frames must be positive, got {frames}")
    have = spec.shape[-1]
    if have >= frames:
        return spec[..., :frames]
    return torch.nn.functional.pad(spec, (0, frames - have), mode="constant", value=value)
