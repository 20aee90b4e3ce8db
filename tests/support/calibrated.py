"""A random ResNet whose BatchNorm statistics were estimated on real dB inputs.

With default statistics (mean 0, var 1) dB-scale activations blow up and
every score is exactly 0 or 1, so precision and tolerance checks would be
vacuous. Estimating the statistics on real spectrograms (no labels, no
training of weights) gives a network whose scores spread over (0, 1) and
whose activations have the scale of a trained one. Shared by the tests and
``benchmarks/bench_precision.py``, with synthetic windows to make inputs of.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from listener.model.network import build_model

_RATE = 20_000


def synthetic_waves(n: int, seed: int = 0) -> np.ndarray:
    """``(n, 40000)`` float32 2 s windows at 20 kHz: noise at several levels, some with a sweep."""
    rng = np.random.default_rng(seed)
    t = np.arange(2 * _RATE) / _RATE
    waves = []
    for i in range(n):
        level = 10.0 ** (-(i % 4) - 1)
        sweep = np.sin(2 * np.pi * (1500 + 800 * i) * t + 300 * np.sin(2 * np.pi * 3 * t))
        waves.append(level * rng.standard_normal(t.size) + (0.05 * sweep if i % 2 else 0.0))
    return np.stack(waves).astype(np.float32)


def calibrated_model(features: torch.Tensor, arch: str = "resnet18",
                     seed: int = 0, band_norm: bool = False) -> nn.Module:
    """``build_model(arch, band_norm)`` with BatchNorm statistics averaged over
    ``features`` (and flips)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch, band_norm)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.momentum = None  # cumulative average over the calibration batches
                with torch.no_grad():
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
        # Calibrated in train mode, where the head's dropout draws: still inside the
        # fork, or the statistics (and every score) change from process to process.
        model.train()
        with torch.no_grad():
            model(features)
            model(features.flip(-1))
    return model.eval()


def save_calibrated(path: Path, features: torch.Tensor, arch: str = "resnet18",
                    seed: int = 0) -> Path:
    """:func:`calibrated_model` written as a ``.safetensors`` checkpoint at ``path``."""
    model = calibrated_model(features, arch, seed)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
