"""The pure functions of listener.model.dsp, against scipy, numpy and real torchaudio."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch

from listener.model import dsp

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(DATA / "frontend_golden.npz") as npz:
        return {k: npz[k] for k in npz.files}


def _noise(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


# --- downmix -----------------------------------------------------------------

def test_downmix_averages_channels_to_float32() -> None:
    x = np.stack([np.ones(5), 3 * np.ones(5)]).astype(np.float64)
    y = dsp.downmix(x)
    assert y.dtype == np.float32 and y.shape == (5,)
    np.testing.assert_array_equal(y, np.full(5, 2.0, dtype=np.float32))


def test_downmix_passes_mono_through() -> None:
    x = _noise(100)
    np.testing.assert_array_equal(dsp.downmix(x), x)
    np.testing.assert_array_equal(dsp.downmix(x[None, :]), x)


def test_downmix_rejects_3d_naming_the_shape() -> None:
    with pytest.raises(ValueError, match=r"\(1, 2, 3\)"):
        dsp.downmix(np.zeros((1, 2, 3)))


# --- resample ----------------------------------------------------------------

def test_resample_48k_to_20k_is_resample_poly_5_12(monkeypatch: pytest.MonkeyPatch) -> None:
    x = _noise(96000)
    expected = scipy.signal.resample_poly(x, 5, 12, axis=-1).astype(np.float32)
    calls: list[tuple[int, int]] = []
    real = scipy.signal.resample_poly

    def spy(x: np.ndarray, up: int, down: int, **kw: object) -> np.ndarray:
        calls.append((up, down))
        return real(x, up, down, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(scipy.signal, "resample_poly", spy)
    y = dsp.resample(x, 48000, 20000)
    assert calls == [(5, 12)]
    assert y.dtype == np.float32 and y.shape == (40000,)
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("rate", [22050, 24576, 25057, 36000, 44100, 48000])
def test_awkward_rates_give_the_right_20k_length(rate: int) -> None:
    up, down = 20000 // math.gcd(rate, 20000), rate // math.gcd(rate, 20000)
    x = _noise(2 * rate)
    y = dsp.resample(x, rate, 20000)
    assert y.shape == (40000,) and y.dtype == np.float32
    np.testing.assert_array_equal(y, scipy.signal.resample_poly(x, up, down).astype(np.float32))
    # An odd length rounds up, as resample_poly does.
    assert dsp.resample(x[:12345], rate, 20000).shape == (math.ceil(12345 * up / down),)


def test_resample_is_identity_at_equal_rates() -> None:
    x = _noise(1000)
    np.testing.assert_array_equal(dsp.resample(x, 20000, 20000), x)


def test_resample_rejects_bad_rates() -> None:
    with pytest.raises(ValueError, match="0 -> 20000"):
        dsp.resample(_noise(10), 0, 20000)


# --- STFT --------------------------------------------------------------------

def test_hann_window_is_periodic() -> None:
    n = 2560
    expected = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    w = dsp.hann_window(n)
    assert w.dtype == torch.float32 and w.shape == (n,)
    np.testing.assert_allclose(w.numpy(), expected, atol=1e-6)


def test_two_seconds_at_20k_give_157_frames() -> None:
    wave = torch.from_numpy(_noise(40000))[None]
    p = dsp.stft_power(wave, 2560, 256, 2560, dsp.hann_window(2560))
    assert p.shape == (1, 1281, 157) and p.dtype == torch.float32


def test_stft_power_matches_numpy_reflect_padded_rfft() -> None:
    x = _noise(6000, seed=3)
    n_fft, hop = 512, 128
    p = dsp.stft_power(torch.from_numpy(x)[None], n_fft, hop, n_fft, dsp.hann_window(n_fft))[0]
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([padded[t * hop:t * hop + n_fft] * w for t in range(1 + len(x) // hop)])
    expected = np.abs(np.fft.rfft(frames, axis=-1)).T ** 2
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-3, atol=1e-3 * expected.max())


def test_stft_power_rejects_too_short_a_window() -> None:
    with pytest.raises(ValueError, match="1000 samples"):
        dsp.stft_power(torch.zeros(1, 1000), 2560, 256, 2560, dsp.hann_window(2560))


# --- mel filterbank ----------------------------------------------------------

def _htk_filterbank_f64(n_freqs: int, f_max: float, n_mels: int, rate: int) -> np.ndarray:
    """The HTK triangles written out the other way round: per filter, in float64."""
    freqs = np.linspace(0.0, rate // 2, n_freqs)
    top = 2595.0 * np.log10(1.0 + f_max / 700.0)
    edges = 700.0 * (np.power(10.0, np.linspace(0.0, top, n_mels + 2) / 2595.0) - 1.0)
    fb = np.zeros((n_freqs, n_mels))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (freqs - lo) / (mid - lo)
        falling = (hi - freqs) / (hi - mid)
        fb[:, m] = np.clip(np.minimum(rising, falling), 0.0, None)
    return fb


@pytest.mark.parametrize("rate", [16000, 20000])
def test_filterbank_matches_torchaudio_golden_exactly(golden: dict, rate: int) -> None:
    fb = dsp.mel_filterbank(1281, 0.0, 10000.0, 256, rate)
    assert fb.shape == (1281, 256) and fb.dtype == torch.float32
    np.testing.assert_array_equal(fb.numpy(), golden[f"fb_{rate}"])


@pytest.mark.parametrize("rate", [16000, 20000])
def test_filterbank_matches_independent_htk_formula(rate: int) -> None:
    fb = dsp.mel_filterbank(1281, 0.0, 10000.0, 256, rate).numpy()
    np.testing.assert_allclose(fb, _htk_filterbank_f64(1281, 10000.0, 256, rate), atol=5e-5)
    # No area normalisation: triangles peak near 1, not at 2 / bandwidth.
    assert 0.9 < fb.max() <= 1.0


def test_16k_labelling_leaves_mel_bins_238_to_255_empty() -> None:
    empty = np.flatnonzero(dsp.mel_filterbank(1281, 0.0, 10000.0, 256, 16000).amax(dim=0) == 0)
    np.testing.assert_array_equal(empty, np.arange(238, 256))
    assert not (dsp.mel_filterbank(1281, 0.0, 10000.0, 256, 20000).amax(dim=0) == 0).any()


def test_filterbank_rejects_inverted_band() -> None:
    with pytest.raises(ValueError, match="f_min=5000"):
        dsp.mel_filterbank(1281, 5000.0, 1000.0, 256, 16000)


# --- dB and frames -----------------------------------------------------------

def test_power_to_db_values_and_clamp() -> None:
    p = torch.tensor([[[1.0, 10.0, 0.0], [1e-3, 100.0, 1e-12]]])
    db = dsp.power_to_db(p, top_db=None)
    np.testing.assert_allclose(db.numpy(), [[[0.0, 10.0, -100.0], [-30.0, 20.0, -100.0]]],
                               atol=1e-5)
    floored = dsp.power_to_db(p, top_db=25.0)
    assert floored.min().item() == pytest.approx(20.0 - 25.0)


def test_power_to_db_floor_is_per_item_not_per_batch() -> None:
    loud = torch.rand(1, 8, 20, generator=torch.Generator().manual_seed(0)) * 1e4
    quiet = loud * 1e-6
    batched = dsp.power_to_db(torch.cat([loud, quiet]), top_db=30.0)
    one_by_one = torch.cat([dsp.power_to_db(loud, 30.0), dsp.power_to_db(quiet, 30.0)])
    torch.testing.assert_close(batched, one_by_one, rtol=0, atol=1e-5)
    floors = batched.amin(dim=(1, 2))
    assert floors[0] - floors[1] == pytest.approx(60.0, abs=1e-3)


def test_fit_frames_pads_with_value_at_the_end() -> None:
    spec = torch.randn(2, 4, 157)
    out = dsp.fit_frames(spec, 312, 0.0)
    assert out.shape == (2, 4, 312)
    assert torch.equal(out[..., :157], spec)
    assert torch.count_nonzero(out[..., 157:]) == 0
    assert (dsp.fit_frames(spec, 160, -7.5)[..., 157:] == -7.5).all()


def test_fit_frames_crops_to_the_first_frames() -> None:
    spec = torch.randn(1, 4, 400)
    assert torch.equal(dsp.fit_frames(spec, 312), spec[..., :312])
    assert torch.equal(dsp.fit_frames(spec, 400), spec)
