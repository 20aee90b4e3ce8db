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

import functools
import logging
import math
from collections.abc import Sequence
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
    training pipeline's exactly. Each row of a 2-D ``x`` is resampled on its
    own, bit for bit as if alone (:func:`resample_batch` is the fast way).

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


@functools.lru_cache(maxsize=32)
def polyphase_filter(up: int, down: int) -> tuple[np.ndarray, int]:
    """The filter ``resample_poly(x, up, down)`` builds for float32 input, and its delay.

    scipy designs ``firwin(20 * max(up, down) + 1, 1 / max(up, down),
    window=("kaiser", 5.0))``, casts it to the input's dtype, multiplies it by
    ``up`` in that dtype, and pads it in front so output samples fall at the
    filter's centre. Designing it costs more than filtering one window at
    awkward rates (8 821 taps at 44.1 kHz), so it is made once per rate pair.

    Returns:
        ``(h, skip)``: the padded float32 filter for ``scipy.signal.upfirdn``
        and how many of upfirdn's output samples precede the first kept one.
    """
    max_rate = max(up, down)
    half_len = 10 * max_rate
    h = scipy.signal.firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    h = h.astype(np.float32)
    h *= np.float32(up)  # in float32, as scipy does for float32 input
    pre_pad = down - half_len % down
    h = np.concatenate([np.zeros(pre_pad, dtype=np.float32), h])
    h.setflags(write=False)
    return h, (half_len + pre_pad) // down


def resample_batch(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """:func:`resample` of each row of ``(batch, samples)`` float32, in one call.

    Bit-identical to resampling each row alone with ``resample_poly`` (same
    filter, same float32 arithmetic in scipy's ``upfirdn``; a test holds it to
    that), but with the filter designed once per rate pair and one call for
    the whole batch. ``upfirdn`` releases the GIL, so it runs beside the
    model's thread.

    Args:
        x: ``(batch, samples)``, any float dtype (cast to float32 first, as
            the per-window path's downmix does).
        sr_in, sr_out: rates in Hz.

    Returns:
        ``(batch, ceil(samples * up / down))`` float32, C-contiguous.
    """
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected audio of shape (batch, samples), got shape {x.shape}")
    if sr_in == sr_out:
        return x
    g = gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    n_out = -(-x.shape[1] * up // down)
    h, skip = polyphase_filter(up, down)
    y = scipy.signal.upfirdn(h, x, up, down, axis=-1)
    if y.shape[1] < skip + n_out:  # scipy pads the filter's tail for such short inputs
        y = np.pad(y, ((0, 0), (0, skip + n_out - y.shape[1])))
    return np.ascontiguousarray(y[:, skip:skip + n_out], dtype=np.float32)


def prepare_batch(windows: Sequence[np.ndarray] | np.ndarray, sr_in: int,
                  sr_out: int) -> np.ndarray:
    """Downmix and resample many windows of one rate and one length: ``(batch, samples')``.

    Bit for bit :func:`resample` of :func:`downmix` of each window alone (the
    trained model saw each 2 s window resampled on its own), through
    :func:`resample_batch`: one filter design per rate pair, one call per batch.

    Args:
        windows: ``(batch, samples)`` mono, ``(batch, channels, samples)``,
            or a sequence of ``(channels, samples)`` / ``(samples,)`` arrays
            (channel counts may differ) of one length.
        sr_in: their rate in Hz.
        sr_out: the model's rate in Hz.

    Returns:
        ``(batch, ceil(samples * up / down))`` float32, C-contiguous;
        ``(0, 0)`` for no windows.

    Raises:
        ValueError: windows of different lengths (batch each length separately).
    """
    if isinstance(windows, np.ndarray) and windows.ndim == 2:
        mono = np.asarray(windows, dtype=np.float32)
    else:
        parts = [downmix(np.asarray(w)) for w in windows]
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        lengths = sorted({p.shape[-1] for p in parts})
        if len(lengths) > 1:
            raise ValueError(f"prepare_batch needs windows of one length, got lengths "
                             f"{lengths[:5]}; batch each length separately")
        mono = np.stack(parts)
    return resample_batch(mono, sr_in, sr_out)


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
    # re**2 + im**2 rather than torchaudio's abs().pow(2): complex abs is a
    # slow scalar hypot on CPUs, and the two differ by an ulp or so per bin
    # (relative 1e-7, i.e. ~1e-6 dB), far inside the parity tolerance.
    parts = torch.view_as_real(spec)
    re, im = parts[..., 0], parts[..., 1]
    return re * re + im * im


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


MelBlock = tuple[int, int, int, int]


def mel_blocks(fb: Tensor, width: int = 8) -> tuple[MelBlock, ...]:
    """Split a filterbank into runs of ``width`` filters and the FFT bins each run touches.

    Each triangular filter is non-zero on a few neighbouring bins, so 99% of
    the dense ``(1281, 256)`` matrix is zeros. :func:`apply_mel` multiplies
    only these blocks (~8x fewer products); filters that are empty
    everywhere (the 16 kHz labelling quirk) belong to no block.

    Returns:
        ``(first_bin, end_bin, first_filter, end_filter)`` per block.
    """
    nonzero = fb != 0
    blocks = []
    for c0 in range(0, fb.shape[1], width):
        c1 = min(c0 + width, fb.shape[1])
        rows = nonzero[:, c0:c1].any(dim=1).nonzero()
        if rows.numel():
            blocks.append((int(rows.min()), int(rows.max()) + 1, c0, c1))
    return tuple(blocks)


def apply_mel(power: Tensor, fb: Tensor, blocks: tuple[MelBlock, ...] | None = None) -> Tensor:
    """Power spectrogram to mel: ``(batch, n_freqs, frames) -> (batch, n_mels, frames)``.

    With ``blocks`` (from :func:`mel_blocks` of ``fb``) only the non-zero
    blocks are multiplied; the result equals the dense product up to the
    order of float32 additions (relative 1e-7). Without, one dense matmul
    (best on a GPU, where the launch count matters more than the flops).
    """
    if blocks is None:
        return torch.matmul(power.transpose(-1, -2), fb).transpose(-1, -2)
    out = power.new_zeros(power.shape[0], fb.shape[1], power.shape[2])
    for lo, hi, c0, c1 in blocks:
        out[:, c0:c1] = torch.matmul(fb[lo:hi, c0:c1].T, power[:, lo:hi])
    return out


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
