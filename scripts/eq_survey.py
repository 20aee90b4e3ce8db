"""Which spectral balance does a model depend on? Fixed equalisers on the validation windows.

    python3 scripts/eq_survey.py [DATA] WEIGHTS ...   # DATA: ../shared/data

Windows made with a random +-6 dB equaliser (``listener train --eq-db 6``)
scored about 0.87 for the demo models, against 0.97 without. This survey
shows the equaliser was not the cause (the draw of windows was: see
docs/quality.md, "How noisy one draw of validation windows is"): it applies one
fixed equaliser at a time (gains at 100 Hz, 400 Hz, 1.6 kHz and 6.4 kHz,
the recipe's anchors) to every validation window of the held-out files of
the first model's recipe, then puts each window back at its own level, so
only the balance changes; for each WEIGHTS it prints the balanced ROC-AUC
and the share of call and background windows above 0.5.

Reads DATA/train only: never the held-out clips or the L pod recording.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from level_survey import held_out_windows, variant_table

from listener.config import default_config
from listener.model.frontend import Frontend
from listener.training.augment import eq_gain
from listener.training.cache import DEFAULT_VARIANTS, AudioCache, default_cache_dir

#: name -> gains (dB) at 100 Hz, 400 Hz, 1.6 kHz, 6.4 kHz
SETTINGS = {
    "flat": (0, 0, 0, 0),
    "low band +6 dB": (6, 6, 0, 0),
    "low band -6 dB": (-6, -6, 0, 0),
    "call band +6 dB": (0, 0, 6, 6),
    "call band -6 dB": (0, 0, -6, -6),
    "tilt up (-6 to +6 dB)": (-6, -2, 2, 6),
    "tilt down (+6 to -6 dB)": (6, 2, -2, -6),
}


def equalised(waves: np.ndarray, rate: int, anchors_db: tuple[int, ...]) -> np.ndarray:
    """Every row through the equaliser, then back at its own RMS."""
    f = np.fft.rfftfreq(waves.shape[1], 1.0 / rate)
    out = np.fft.irfft(np.fft.rfft(waves, axis=1) * eq_gain(f, np.asarray(anchors_db, float)),
                       waves.shape[1], axis=1)
    before = np.sqrt(np.mean(np.square(waves, dtype=np.float64), axis=1, keepdims=True))
    after = np.sqrt(np.mean(np.square(out), axis=1, keepdims=True)) + 1e-20
    return (out * before / after).astype(np.float32)


def main(argv: list[str]) -> None:
    data, weights = Path(argv[0]), argv[1:]
    frontend = Frontend(default_config().frontend)
    rate = frontend.cfg.sample_rate
    cache = AudioCache(default_cache_dir(), rate, DEFAULT_VARIANTS)
    vs, files = held_out_windows(data, frontend, cache, weights[0])
    variant_table("equaliser", vs, files, frontend, weights,
                  ((name, equalised(vs.waves, rate, anchors))
                   for name, anchors in SETTINGS.items()))


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args if args and Path(args[0]).is_dir() else ["../shared/data", *args])
