"""Do the recipe's mixed calls sound as loud as real calls on hydrophones?

    python3 scripts/snr_survey.py [DATA]     # DATA: ../shared/data (default)

The same in-band figure for both: the energy in 500-9000 Hz (where the calls
are) per 50 ms frame; the level of the quietest fifth of the frames is the
noise, the 90th percentile the call plus noise; the figure is
10 log10((peak - noise) / noise) dB. It is computed for every call file of
DATA/train/calls per source (the hydrophone and recorder sources are what a
live stream sounds like; ccv holds clean catalogue calls), and for 400
positive and 400 negative training examples made by the recipe's default
augmentation (no AAC, no band limits: those change the band, not the level).
Reads DATA/train only: never the held-out clips or the L pod recording.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from listener.config import default_config
from listener.model.frontend import Frontend
from listener.quality.labels import read_labels
from listener.training import augment
from listener.training.augment import AugmentConfig
from listener.training.cache import AudioCache, default_cache_dir
from listener.training.data import SourcePool, load_recordings

BAND_HZ = (500.0, 9000.0)
FRAME = 1000  # 50 ms at 20 kHz


def in_band_snr_db(x: np.ndarray, rate: int) -> float | None:
    """The figure above, or ``None`` for audio shorter than 8 frames."""
    n = x.size // FRAME
    if n < 8:
        return None
    frames = x[:n * FRAME].reshape(n, FRAME).astype(np.float64) * np.hanning(FRAME)
    spectrum = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    f = np.fft.rfftfreq(FRAME, 1.0 / rate)
    energy = spectrum[:, (f >= BAND_HZ[0]) & (f <= BAND_HZ[1])].sum(axis=1)
    noise, peak = np.percentile(energy, 20), np.percentile(energy, 90)
    return float(10 * np.log10(max(peak - noise, 1e-30) / max(noise, 1e-30)))


def line(name: str, values: list[float]) -> str:
    v = np.asarray(values)
    return (f"| {name} | {v.size} | {np.percentile(v, 10):.1f} | {np.median(v):.1f} | "
            f"{np.percentile(v, 90):.1f} |")


def main(data: Path) -> None:
    frontend = Frontend(default_config().frontend)
    rate = frontend.cfg.sample_rate
    recs, _ = load_recordings(read_labels(data / "train"), frontend,
                              cache=AudioCache(default_cache_dir(), rate, ()))
    print("| audio | files or examples | p10 dB | median dB | p90 dB |\n|---|---|---|---|---|")
    for source in sorted({r.source for r in recs if r.positive}):
        values = [in_band_snr_db(r.wave.astype(np.float32), rate)
                  for r in recs if r.positive and r.source == source]
        print(line(f"real calls: {source}", [v for v in values if v is not None]))
    cfg = AugmentConfig(aac_p=0.0, lowpass_p=0.0, highpass_p=0.0)
    calls = SourcePool([r for r in recs if r.positive], cfg.source_power)
    beds = SourcePool([r for r in recs if not r.positive], cfg.source_power)
    rng = np.random.default_rng(0)
    n = 2 * rate
    made = {"recipe positives": [augment.positive_example(calls.draw(rng), beds, n, rng, cfg,
                                                          rate=rate)
                                 for _ in range(400)],
            "recipe negatives": [augment.negative_example(beds, n, rng, cfg, rate=rate)
                                 for _ in range(400)]}
    for name, waves in made.items():
        print(line(f"{name} (snr_db {cfg.snr_db[0]:g}..{cfg.snr_db[1]:g})",
                   [v for w in waves if (v := in_band_snr_db(w, rate)) is not None]))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))
