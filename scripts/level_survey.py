"""How loud are live streams, and does a model's score depend on the level?

    python3 scripts/level_survey.py [DATA] [WEIGHTS ...]   # DATA: ../shared/data

The daemon's spectrogram is in dB re 1.0 with no normalisation (the
production frontend), so a window 20 dB quieter is the same image shifted
down by 20 dB, and a network that never trained at that level scores it
differently. Two tables:

1. the RMS of every 2 s window (at the frontend's 20 kHz) of the hydrophone
   and recorder audio in DATA/train (per class and source) and of the real
   Orcasound Lab HLS segments in DATA/hls, in dB re 0.05 (the recipe's
   reference level; its ``gain_db`` range is set from this table);
2. for each WEIGHTS, the balanced ROC-AUC and the share of call and
   background windows above 0.5 on the validation windows of the held-out
   files of the first model's recipe (its split, seed and window counts),
   every window scaled to one level at a time.

Reads DATA/train and DATA/hls only: never the held-out clips or the L pod
recording.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from demo_selection import recipe_of

from listener.config import default_config
from listener.model.checkpoints import load_model
from listener.model.frontend import Frontend
from listener.model.levels import REFERENCE_RMS
from listener.quality.labels import read_labels
from listener.training.augment import rms
from listener.training.cache import DEFAULT_VARIANTS, AudioCache, default_cache_dir
from listener.training.data import decode_mono, load_recordings
from listener.training.run import split_for
from listener.training.trainer import score
from listener.training.validation import figures, make_validation

LEVELS_DB = (-50, -40, -30, -20, -10, 0, 10, 20)


def window_levels(wave: np.ndarray, n: int) -> list[float]:
    """RMS of each whole ``n``-sample window, digital silence left out."""
    levels = (rms(wave[i * n:(i + 1) * n]) for i in range(wave.size // n))
    return [level for level in levels if level > 1e-6]


def db(level: float) -> float:
    return 20 * np.log10(level / REFERENCE_RMS)


def level_table(data: Path, frontend: Frontend, cache: AudioCache) -> None:
    n = 2 * frontend.cfg.sample_rate
    recs, _ = load_recordings(read_labels(data / "train"), frontend, cache=cache)
    groups: dict[str, list[np.ndarray]] = {}
    for r in recs:
        groups.setdefault(f"{'call' if r.positive else 'background'}: {r.source}",
                          []).append(r.wave)
    groups["site: Orcasound Lab HLS"] = [decode_mono(p, frontend)
                                         for p in sorted((data / "hls").rglob("*.ts"))]
    print("| audio | files | 2 s windows | p5 dB | median dB | p95 dB |\n|---|---|---|---|---|---|")
    for name, waves in sorted(groups.items()):
        levels = [v for w in waves for v in window_levels(w.astype(np.float32), n)]
        if levels:
            p5, p50, p95 = np.percentile(levels, [5, 50, 95])
            print(f"| {name} | {len(waves)} | {len(levels)} | {db(p5):+.0f} | {db(p50):+.0f} | "
                  f"{db(p95):+.0f} |")


def sensitivity_table(data: Path, frontend: Frontend, cache: AudioCache,
                      weights: list[str]) -> None:
    tcfg = recipe_of(weights[0])
    recs, _ = load_recordings(read_labels(data / "train"), frontend, cache=cache)
    _, val, _, _ = split_for(recs, tcfg)
    vs = make_validation(val, int(tcfg.window_s * frontend.cfg.sample_rate), tcfg.seed,
                         tcfg.val_per_call_file, tcfg.val_per_background_file, tcfg.augment)
    unit = vs.waves / np.sqrt(np.mean(np.square(vs.waves, dtype=np.float64), axis=1,
                                      keepdims=True))
    print(f"\n{len(vs.labels)} validation windows of {len(val)} held-out files; balanced "
          "ROC-AUC, calls above 0.5, backgrounds above 0.5:\n")
    print("| level dB re 0.05 | " + " | ".join(Path(w).name for w in weights) + " |")
    print("|---|" + "---|" * len(weights))
    models = [load_model(w)[0] for w in weights]
    for level_db in LEVELS_DB:
        vs.waves = (unit * REFERENCE_RMS * 10 ** (level_db / 20)).astype(np.float32)
        cells = []
        for model in models:
            s = score(model, frontend, vs.waves, torch.device("cpu"))
            fig = figures(vs, s)
            cells.append(f"{fig['balanced_roc_auc']:.3f}, {np.mean(s[vs.labels == 1] > 0.5):.2f}"
                         f", {np.mean(s[vs.labels == 0] > 0.5):.2f}")
        print(f"| {level_db:+d} | " + " | ".join(cells) + " |")


def main(argv: list[str]) -> None:
    data = Path(argv[0] if argv else "../shared/data")
    frontend = Frontend(default_config().frontend)
    cache = AudioCache(default_cache_dir(), frontend.cfg.sample_rate, DEFAULT_VARIANTS)
    level_table(data, frontend, cache)
    if len(argv) > 1:
        sensitivity_table(data, frontend, cache, argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
