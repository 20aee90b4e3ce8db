"""The mel-spectrogram frontend as a module: raw window audio -> model input.

:class:`Frontend` holds the STFT window and the mel filterbank as buffers (so
they follow ``.to(device)``) and calls the pure functions of
:mod:`listener.model.dsp`. With the default :class:`~listener.config.FrontendConfig`
it reproduces the pipeline the OrcaHello weights were trained on, quirks
included; ``docs/frontend.md`` lists them and the options that turn them off.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from listener.config import FrontendConfig
from listener.model import dsp
from listener.model.kernels import warm_vector_maths

log = logging.getLogger(__name__)


class Frontend(torch.nn.Module):
    """Window audio to ``(batch, 1, n_mels, frames)`` float32 dB spectrograms.

    Two steps, split on purpose: :meth:`prepare` (one window) or
    :meth:`prepare_batch` (many, same numbers) runs on the CPU in numpy
    (downmix and resample each window on its own, exactly as the old
    pipeline did per window file); :meth:`forward` runs on a batch of
    prepared windows on any device.

    Args:
        cfg: sizes, rates, ``top_db`` and padding mode; the defaults match the
            production model (20 kHz, n_fft 2560, hop 256, 256 mels to
            10 kHz labelled as if 16 kHz, top_db 100, 312 frames, fastai padding).
    """

    window: Tensor
    mel_fb: Tensor

    def __init__(self, cfg: FrontendConfig | None = None) -> None:
        super().__init__()
        warm_vector_maths()
        self.cfg = cfg if cfg is not None else FrontendConfig()
        n_freqs = self.cfg.n_fft // 2 + 1
        # Non-persistent: both are derived from the config, so they stay out
        # of checkpoints and a model's state_dict keeps only learned weights.
        self.register_buffer("window", dsp.hann_window(self.cfg.n_fft), persistent=False)
        fb = dsp.mel_filterbank(n_freqs, self.cfg.f_min, self.cfg.f_max, self.cfg.n_mels,
                                self.cfg.mel_sample_rate)
        self.register_buffer("mel_fb", fb, persistent=False)
        self._mel_blocks = dsp.mel_blocks(fb)
        if self.cfg.mel_sample_rate != self.cfg.sample_rate:
            log.debug("mel filterbank labelled as %d Hz for %d Hz audio (trained-model quirk)",
                      self.cfg.mel_sample_rate, self.cfg.sample_rate)

    def prepare(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """One window's raw audio at its native rate -> mono float32 at ``cfg.sample_rate``.

        Call it on each window separately: the trained model saw each 2 s
        window resampled on its own, and resampling the whole stream first
        gives slightly different edges.

        Args:
            samples: ``(channels, samples)`` or ``(samples,)``, float.
            sample_rate: the rate of ``samples`` in Hz.

        Returns:
            ``(samples',)`` float32, ``samples' = ceil(samples * up / down)``.
        """
        return dsp.resample(dsp.downmix(samples), sample_rate, self.cfg.sample_rate)

    def prepare_batch(self, windows: Sequence[np.ndarray] | np.ndarray,
                      sample_rate: int) -> np.ndarray:
        """Many windows at one native rate -> ``(batch, samples')`` float32.

        Bit for bit what :meth:`prepare` gives for each window, several times
        faster: the resampling filter is designed once per rate pair and the
        whole batch is filtered in one call (which releases the GIL).

        Args:
            windows: ``(batch, samples)`` mono, ``(batch, channels, samples)``,
                or a sequence of ``(channels, samples)`` / ``(samples,)``
                arrays (channel counts may differ) of one length.
            sample_rate: their rate in Hz.

        Returns:
            ``(batch, ceil(samples * up / down))`` float32, C-contiguous.

        Raises:
            ValueError: windows of different lengths (batch them separately).
        """
        return dsp.prepare_batch(windows, sample_rate, self.cfg.sample_rate)

    @property
    def min_samples(self) -> int:
        """The shortest waveform the STFT accepts (reflect padding needs > n_fft // 2)."""
        return self.cfg.n_fft // 2 + 1

    def waveform_length(self, samples: int) -> int:
        """Samples the STFT gets in ``padding: waveform`` mode for a window of ``samples``."""
        # center=True gives 1 + n // hop frames, so (frames - 1) * hop samples
        # is the shortest input that yields every frame we need.
        return max(samples, (self.cfg.frames - 1) * self.cfg.hop_length)

    def spectrogram(self, wave: Tensor) -> Tensor:
        """The unpadded dB mel spectrogram: ``(batch, n_mels, 1 + samples // hop)`` float32.

        Args:
            wave: ``(batch, samples)`` at ``cfg.sample_rate``.
        """
        power = dsp.stft_power(wave, self.cfg.n_fft, self.cfg.hop_length, self.cfg.n_fft,
                               self.window.float())
        # Block-sparse mel on a CPU (8x fewer flops); one dense matmul on a GPU.
        blocks = self._mel_blocks if wave.device.type == "cpu" else None
        mel = dsp.apply_mel(power, self.mel_fb.float(), blocks)
        return dsp.power_to_db(mel, self.cfg.top_db)

    def forward(self, wave: Tensor) -> Tensor:
        """A batch of prepared windows -> model input.

        Args:
            wave: ``(batch, samples)`` float32 at ``cfg.sample_rate``, on the
                device of this module. Every wave in a batch has the same
                length (the caller batches equal windows; the dB floor is per
                item, so batching does not change any item's values).

        Returns:
            ``(batch, 1, n_mels, cfg.frames)`` float32, contiguous. With
            ``padding: fastai`` frames past the window's own are exactly 0.0
            dB; with ``padding: waveform`` the audio is padded with silence
            before the STFT (which does NOT match the trained weights).
        """
        if wave.dim() != 2:
            raise ValueError(f"expected wave of shape (batch, samples), got {tuple(wave.shape)}")
        # The frontend's dB maths is not safe in half precision (1e-10 clamp,
        # 100 dB range), so it stays float32 even inside a caller's autocast.
        with torch.autocast(device_type=wave.device.type, enabled=False):
            wave = wave.float()
            if self.cfg.padding == "waveform":
                target = self.waveform_length(wave.shape[-1])
                wave = torch.nn.functional.pad(wave, (0, target - wave.shape[-1]))
                spec = dsp.fit_frames(self.spectrogram(wave), self.cfg.frames)
            else:
                spec = dsp.fit_frames(self.spectrogram(wave), self.cfg.frames, 0.0)
        return spec.unsqueeze(1).contiguous()
