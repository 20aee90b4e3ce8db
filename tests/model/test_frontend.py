"""Frontend: shapes, the trained model's quirks, and agreement with real outputs.

Two references: ``frontend_golden.npz`` (real torchaudio 2.9.1 run on real
L pod audio, see ``data/make_frontend_golden.py``) and the old fastai
pipeline's own spectrograms of three Sunset Bay windows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile
import torch

from listener.config import FrontendConfig
from listener.model.frontend import Frontend

DATA = Path(__file__).parents[1] / "data"
EMPTY_BINS = slice(238, 256)


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(DATA / "frontend_golden.npz") as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def waves(golden: dict[str, np.ndarray]) -> torch.Tensor:
    """Three real 2 s windows at 20 kHz: (3, 40000) float32."""
    return torch.from_numpy(golden["wave"])


@pytest.fixture(scope="module")
def frontend() -> Frontend:
    return Frontend()


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, torch.Tensor]]:
    return torch.load(DATA / "sunset_bay_fastai_audio_reference.pt", weights_only=True)


def test_two_seconds_give_157_frames_padded_to_312(frontend: Frontend,
                                                   waves: torch.Tensor) -> None:
    assert frontend.spectrogram(waves).shape == (3, 256, 157)
    out = frontend(waves)
    assert out.shape == (3, 1, 256, 312) and out.dtype == torch.float32
    assert out.is_contiguous()


def test_matches_real_torchaudio_per_window(frontend: Frontend, golden: dict) -> None:
    expected = golden["db"]
    got = frontend.spectrogram(torch.from_numpy(golden["wave"])).numpy()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * scale)


def test_matches_real_torchaudio_with_20k_labelling(golden: dict) -> None:
    fe = Frontend(FrontendConfig(mel_sample_rate=20000))
    got = fe.spectrogram(torch.from_numpy(golden["wave"][:1]))[0].numpy()
    expected = golden["db_sr20000"]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_fastai_padding_is_exactly_zero_db(frontend: Frontend, waves: torch.Tensor) -> None:
    out = frontend(waves)
    assert torch.count_nonzero(out[..., 157:]) == 0
    assert torch.equal(out[:, 0, :, :157], frontend.spectrogram(waves))


def test_top_mel_bins_are_empty_on_real_audio(frontend: Frontend, waves: torch.Tensor) -> None:
    spec = frontend.spectrogram(waves)
    power = torch.matmul(
        torch.stft(waves, 2560, 256, window=frontend.window, return_complex=True).abs().pow(2)
        .transpose(-1, -2), frontend.mel_fb).transpose(-1, -2)
    assert torch.count_nonzero(power[:, EMPTY_BINS]) == 0
    floor = spec.amax(dim=(1, 2), keepdim=True) - 100.0
    assert torch.equal(spec[:, EMPTY_BINS], floor.expand(-1, 18, 157))
    assert (spec[:, 237] > floor[:, 0]).any()


def test_top_mel_bins_carry_energy_with_20k_labelling(waves: torch.Tensor) -> None:
    spec = Frontend(FrontendConfig(mel_sample_rate=20000)).spectrogram(waves)
    floor = spec.amax(dim=(1, 2), keepdim=True) - 100.0
    top = spec[:, EMPTY_BINS]
    assert (top > floor[:, :1]).all()
    assert top.std() > 1.0


def test_batched_equals_one_by_one_for_loud_and_quiet(frontend: Frontend,
                                                      waves: torch.Tensor) -> None:
    # 40 dB quieter: its own floor stays above the -100 dB clamp.
    loud, quiet = waves[:1], waves[1:2] * 1e-2
    batched = frontend(torch.cat([loud, quiet]))
    single = torch.cat([frontend(loud), frontend(quiet)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)
    # Meaningful only if the two floors differ: a batch-wide max would show.
    floors = batched[:, 0, :, :157].amin(dim=(1, 2))
    assert floors[0] - floors[1] == pytest.approx(40.0, abs=0.2)


def test_reference_has_the_structure_we_produce(frontend: Frontend, reference: dict,
                                                waves: torch.Tensor) -> None:
    ours = frontend.spectrogram(waves[:1])
    for name, seg in reference.items():
        raw, std = seg["mel_raw"], seg["mel_standardized"]
        assert raw.shape == (1, *ours.shape[1:]), name
        assert std.shape == frontend(waves[:1])[0].shape, name
        assert raw.dtype == std.dtype == torch.float32
        # Per-window floor: each window's minimum is its own max - 100 dB.
        assert raw.max() - raw.min() <= 100.0 + 1e-4
        assert raw.min().item() == pytest.approx(raw.max().item() - 100.0, abs=1e-4)
        assert torch.equal(raw[0, EMPTY_BINS], torch.full((18, 157), raw.min().item()))
        assert (raw[0, 237] > raw.min()).all()
        # The padding is exactly 0.0 dB, as fit_frames(mel_raw, 312, 0.0) makes it.
        assert torch.count_nonzero(std[..., 157:]) == 0
        # The real frames are NOT bit-equal to mel_raw in the shipped file (it
        # was evidently computed in a second run): differences up to 0.3 dB,
        # 0.008 dB on average. Pin that, so a changed fixture is noticed.
        diff = (std[..., :157] - raw).abs()
        assert diff.max() < 0.5 and diff.mean() < 0.01, name
    floors = sorted(seg["mel_raw"].min().item() for seg in reference.values())
    assert floors[-1] - floors[0] > 5.0, "the three windows have different floors"


def test_waveform_padding_pads_audio_with_silence(golden: dict, waves: torch.Tensor) -> None:
    fe = Frontend(FrontendConfig(padding="waveform"))
    assert fe.waveform_length(40000) == 311 * 256
    out = fe(waves)
    assert out.shape == (3, 1, 256, 312) and out.dtype == torch.float32
    floor = out.amax(dim=(1, 2, 3), keepdim=True) - 100.0
    # Frames whose STFT window lies wholly in the silence sit at the floor,
    # not at 0.0 dB as with fastai padding.
    assert torch.equal(out[..., 162:], floor.expand(-1, 1, 256, 150))
    # Frames that never see the end of the window match fastai's frames (no
    # floor in play: top_db wide enough that only the 1e-10 clamp applies).
    wide = {"top_db": 1000.0}
    a = Frontend(FrontendConfig(**wide))(waves)[..., :152]
    b = Frontend(FrontendConfig(padding="waveform", **wide))(waves)[..., :152]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-3)


@pytest.mark.parametrize("padding", ["fastai", "waveform"])
def test_longer_windows_are_cropped_to_frames(padding: str) -> None:
    fe = Frontend(FrontendConfig(padding=padding))  # type: ignore[arg-type]
    wave = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 100000),
                                                                    dtype=np.float32))
    out = fe(wave)
    assert out.shape == (2, 1, 256, 312)
    assert torch.equal(out[:, 0], fe.spectrogram(wave)[..., :312])


def test_prepare_downmixes_then_resamples_48k_stereo(frontend: Frontend) -> None:
    stereo = np.random.default_rng(2).standard_normal((2, 96000)).astype(np.float32)
    got = frontend.prepare(stereo, 48000)
    expected = scipy.signal.resample_poly(stereo.mean(axis=0), 5, 12).astype(np.float32)
    assert got.shape == (40000,) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_real_call_at_25057_hz_end_to_end(frontend: Frontend) -> None:
    audio, rate = soundfile.read(DATA / "catalog" / "S10-JKL-4_25057hz.wav", dtype="float32",
                                 always_2d=True)
    assert rate == 25057
    window = audio.T[:, : 2 * rate]
    wave = frontend.prepare(window, rate)
    assert wave.shape == (40000,)
    out = frontend(torch.from_numpy(wave)[None])
    assert out.shape == (1, 1, 256, 312) and torch.isfinite(out).all()
    assert torch.count_nonzero(out[..., 157:]) == 0


def test_forward_stays_float32_under_autocast(frontend: Frontend, waves: torch.Tensor) -> None:
    plain = frontend(waves[:1])
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        auto = frontend(waves[:1])
    assert auto.dtype == torch.float32
    assert torch.equal(auto, plain)


def test_buffers_are_not_in_the_state_dict(frontend: Frontend) -> None:
    assert {n for n, _ in frontend.named_buffers()} == {"window", "mel_fb"}
    assert frontend.state_dict() == {}


def test_rejects_unbatched_wave(frontend: Frontend) -> None:
    with pytest.raises(ValueError, match=r"\(40000,\)"):
        frontend(torch.zeros(40000))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(frontend: Frontend, waves: torch.Tensor) -> None:
    cpu = frontend(waves)
    fe = Frontend().to("cuda")
    assert fe.window.device.type == "cuda" and fe.mel_fb.device.type == "cuda"
    with torch.autocast(device_type="cuda", dtype=torch.float16):
        gpu = fe(waves.to("cuda"))
    assert gpu.dtype == torch.float32
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-2)


def _reference_spectrogram(fe: Frontend, wave: torch.Tensor) -> torch.Tensor:
    """The frontend as first written (complex abs, dense mel matmul): the parity yardstick."""
    spec = torch.stft(wave, fe.cfg.n_fft, fe.cfg.hop_length, window=fe.window, center=True,
                      pad_mode="reflect", return_complex=True).abs().pow(2.0)
    mel = torch.matmul(spec.transpose(-1, -2), fe.mel_fb).transpose(-1, -2)
    db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
    return torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - fe.cfg.top_db)


def _real_windows(name: str, n: int) -> tuple[np.ndarray, int]:
    audio, rate = soundfile.read(DATA / "recordings" / name, dtype="float32")
    return np.stack([audio[i * rate:(i + 2) * rate] for i in range(n)]), rate


@pytest.mark.parametrize("labelling", [16000, 20000])
def test_fast_spectrogram_within_1e4_db_of_the_reference(labelling: int) -> None:
    fe = Frontend(FrontendConfig(mel_sample_rate=labelling))
    windows, rate = _real_windows("onc_naxys_hydrophone_44000hz.wav", 6)
    wave = torch.from_numpy(fe.prepare_batch(windows, rate))
    got = fe.spectrogram(wave)
    # Quiet real windows too: 60 dB down, their floors stay clear of the 1e-10 clamp.
    quiet = fe.spectrogram(wave * 1e-3)
    assert (got - _reference_spectrogram(fe, wave)).abs().max() <= 1e-4
    assert (quiet - _reference_spectrogram(fe, wave * 1e-3)).abs().max() <= 1e-4


@pytest.mark.parametrize(("name", "rate_as"), [
    ("S01-JL-1_44100hz.wav", None), ("S04-J-3_24576hz.wav", None),
    ("S10-JKL-4_25057hz.wav", None), ("S12-J-4_36000hz.wav", None),
    ("S01-JL_22050hz.wav", 48000), ("S01-JL_22050hz.wav", 20000)])
def test_prepare_batch_is_bit_identical_to_prepare(frontend: Frontend, name: str,
                                                   rate_as: int | None) -> None:
    audio, rate = soundfile.read(DATA / "catalog" / name, dtype="float32")
    rate = rate_as or rate
    n = rate // 2  # half-second windows: four of them fit every catalogue call
    windows = [np.stack([audio[i * n // 3:i * n // 3 + n]] * (1 + i % 2)) for i in range(4)]
    batch = frontend.prepare_batch(windows, rate)
    one_by_one = np.stack([frontend.prepare(w, rate) for w in windows])
    assert batch.dtype == np.float32 and batch.shape == one_by_one.shape
    assert np.array_equal(batch, one_by_one)
    # A (batch, samples) mono array and a very short window take the same path.
    mono = np.stack([w.mean(axis=0, dtype=np.float32) for w in windows])
    assert np.array_equal(frontend.prepare_batch(mono, rate), one_by_one)
    short = audio[None, :300]
    alone = frontend.prepare(short[0], rate)[None]
    assert np.array_equal(frontend.prepare_batch(short, rate), alone)


def test_prepare_batch_refuses_mixed_lengths(frontend: Frontend) -> None:
    with pytest.raises(ValueError, match="one length"):
        frontend.prepare_batch([np.zeros(1000, np.float32), np.zeros(999, np.float32)], 48000)
    assert frontend.prepare_batch([], 48000).shape == (0, 0)
