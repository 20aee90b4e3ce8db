"""The exact model input of one window, for ``listener features`` and debugging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from listener.audio.decode import FileDecoder
from listener.config import Config
from listener.errors import ListenerError
from listener.model.dsp import downmix
from listener.model.frontend import Frontend


def read_span(path: str | Path, start_s: float, duration_s: float) -> tuple[np.ndarray, int]:
    """Decode ``[start_s, start_s + duration_s)`` of a file as mono; (samples, rate)."""
    decoder = FileDecoder(path)
    parts: list[np.ndarray] = []
    got = 0
    first = last = 0
    blocks = iter(decoder)
    for block in blocks:
        if not parts and not got:
            first = round(start_s * decoder.sample_rate)
            last = first + round(duration_s * decoder.sample_rate)
        lo = decoder.samples_read - block.shape[1]
        a, b = max(first, lo), min(last, decoder.samples_read)
        if a < b:
            parts.append(downmix(block[:, a - lo:b - lo]))
        got = decoder.samples_read
        if got >= last:
            break
    close = getattr(blocks, "close", None)
    if close is not None:
        close()  # stops ffmpeg now rather than at garbage collection
    if not parts:
        lasts = got / max(decoder.sample_rate, 1)
        raise ListenerError(f"{path}: no audio at {start_s} s (the file lasts {lasts:.2f} s)")
    return np.concatenate(parts), decoder.sample_rate


def window_features(path: str | Path, start_s: float, duration_s: float | None,
                    cfg: Config) -> np.ndarray:
    """Float32 (1, n_mels, frames): what the model sees for this window."""
    duration = duration_s if duration_s is not None else cfg.detection.window_s
    samples, rate = read_span(path, start_s, duration)
    frontend = Frontend(cfg.frontend)
    wave = frontend.prepare(samples, rate)
    with torch.inference_mode():
        feats = frontend(torch.from_numpy(wave)[None])
    return feats[0].numpy().astype(np.float32)
