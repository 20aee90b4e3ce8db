"""Small, fast training material: synthetic calls and noise, and a tiny frontend.

The tiny frontend (32 mel bins, 40 frames) makes a ResNet18 step some 60x
cheaper than the production 256 x 312 input, so a whole run takes seconds;
the recipe's code paths are the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from support.cli import CliOutcome, run_cli, run_cli_process

from listener.config import FrontendConfig
from listener.training.augment import AugmentConfig
from listener.training.data import Recording
from listener.training.trainer import TrainConfig

RATE = 20_000
TINY = FrontendConfig(n_fft=1024, hop_length=1000, n_mels=32, mel_sample_rate=RATE, frames=40)
#: A recipe of seconds: two epochs of two steps on the tiny frontend.
CFG = TrainConfig(epochs=2, steps_per_epoch=2, batch_size=4, val_fraction=0.5,
                  val_per_call_file=2, val_per_background_file=2, patience=10,
                  augment=AugmentConfig(freq_mask_max=4, time_mask_max=4))
TINY_YAML = """station: {id: test}
frontend: {n_fft: 1024, hop_length: 1000, n_mels: 32, mel_sample_rate: 20000, frames: 40}
"""


def noise(seconds: float, rng: np.random.Generator, level: float = 0.01) -> np.ndarray:
    """Brown-ish hydrophone-like noise."""
    n = int(seconds * RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    out = np.fft.irfft(spectrum / f ** 0.5, n)
    return (out / np.sqrt(np.mean(out ** 2)) * level).astype(np.float32)


def call(seconds: float, rng: np.random.Generator, f0: tuple[float, float] = (700, 1400),
         level: float = 0.05) -> np.ndarray:
    """A killer-whale-like call: a frequency-modulated tone with harmonics, faded in and out."""
    t = np.arange(int(seconds * RATE)) / RATE
    a, b = rng.uniform(*f0, size=2)
    freq = a + (b - a) * t / seconds + 150 * np.sin(2 * np.pi * rng.uniform(1, 3) * t)
    phase = 2 * np.pi * np.cumsum(freq) / RATE
    wave = sum(np.sin(k * phase) / k for k in range(1, 5))
    env = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)
    return (wave * env * level).astype(np.float32)


def chirp(rng: np.random.Generator, level: float = 0.03, f: tuple[float, float] = (4400, 5200),
          seconds: float = 0.3) -> np.ndarray:
    """A short rising chirp with its second harmonic."""
    n = int(seconds * RATE)
    tt = np.arange(n) / RATE
    freq = f[0] + (f[1] - f[0]) * tt / seconds
    phase = 2 * np.pi * np.cumsum(freq) / RATE
    return ((np.sin(phase) + 0.5 * np.sin(2 * phase)) * np.hanning(n) * level).astype(np.float32)


def squeak(seconds: float, rng: np.random.Generator, level: float = 0.03) -> np.ndarray:
    """A site's mechanical squeak: 0.3 s, 4.4-5.2 kHz with a harmonic, every 1-2 s, in noise."""
    out = noise(seconds, rng)
    t = 0.2
    while t < seconds - 0.4:
        start = int(t * RATE)
        c = chirp(rng, level)
        out[start:start + c.size] += c
        t += rng.uniform(1.0, 2.0)
    return out


def recordings(seed: int = 0, calls: int = 4, backgrounds: int = 4) -> list[Recording]:
    """Synthetic labelled recordings in two sources per class."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(calls):
        wave = call(1.5, rng)
        out.append(Recording(Path(f"calls/{'ab'[i % 2]}/c{i}.wav"), True, wave))
    for i in range(backgrounds):
        out.append(Recording(Path(f"background/{'xy'[i % 2]}/b{i}.wav"), False,
                             noise(4.0, rng)))
    return out


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def write_wav(path: Path, wave: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, RATE, subtype="FLOAT")


def listener_cli(*args: str | Path, ok: tuple[int, ...] = (0,)) -> CliOutcome:
    """``listener ARGS``; its exit status must be one of ``ok``.

    A command that may succeed runs as its own process (training's numbers as
    a user gets them, torch's threads its own); one that must be refused
    (``ok`` without 0) never trains, so it runs in this process, 3 s sooner.
    """
    res: CliOutcome = (
        run_cli_process(*args, timeout_s=600) if 0 in ok else run_cli(*args))
    assert res.returncode in ok, res.stderr[-3000:]
    return res


def train_tiny_cli(root: Path, out: Path, *flags: str | Path, seed: int,
                   ) -> CliOutcome:
    """``listener train`` for one step on four synthetic calls and backgrounds written
    under ``root``, through the tiny frontend, with ``flags`` added."""
    rng = np.random.default_rng(seed)
    for i in range(4):
        write_wav(root / "data" / "calls" / "synth" / f"c{i}.wav", call(1.5, rng))
        write_wav(root / "data" / "background" / "noise" / f"b{i}.wav", noise(4.0, rng))
    (root / "tiny.yaml").write_text(TINY_YAML, encoding="utf-8")
    return listener_cli("train", root / "data", *flags, "--config", root / "tiny.yaml",
                        "--epochs", "1", "--steps", "1", "--batch-size", "4",
                        "--val-fraction", "0.5", "--no-aac", "--cache", root / "cache",
                        "--out", out)
