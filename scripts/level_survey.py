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
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from demo_selection import recipe_of

from listener.audio.level import FLOOR_DBFS, window_levels_dbfs
from listener.config import default_config
from listener.model.ensemble import load_network
from listener.model.frontend import Frontend
from listener.model.levels import REFERENCE_RMS
from listener.quality.labels import read_labels
from listener.training.cache import DEFAULT_VARIANTS, AudioCache, default_cache_dir
from listener.training.data import decode_mono, load_recordings
from listener.training.run import split_for
from listener.training.validation import ValidationSet, figures, make_validation, score

LEVELS_DB = (-50, -40, -30, -20, -10, 0, 10, 20)


def window_levels(wave: np.ndarray, n: int) -> np.ndarray:
    """Level of each whole ``n``-sample window, dB re 0.05 RMS, digital silence left out."""
    k = wave.size // n
    levels = window_levels_dbfs(wave[:k * n].reshape(k, n))
    return levels[levels > FLOOR_DBFS] - 20 * np.log10(REFERENCE_RMS)


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
        levels = np.concatenate([window_levels(w.astype(np.float32), n) for w in waves])
        if levels.size:
            # percentiles of the RMS itself, as docs/quality.md's table was made
            p5, p50, p95 = 20 * np.log10(np.percentile(10 ** (levels / 20), [5, 50, 95]))
            print(f"| {name} | {len(waves)} | {levels.size} | {p5:+.0f} | {p50:+.0f} | "
                  f"{p95:+.0f} |")


def held_out_windows(data: Path, frontend: Frontend, cache: AudioCache,
                     weights: str) -> tuple[ValidationSet, int]:
    """The validation windows of the held-out files of ``weights``' recipe (its split,
    seed and window counts), and how many files they come from."""
    tcfg = recipe_of(weights)
    recs, _ = load_recordings(read_labels(data / "train"), frontend, cache=cache)
    _, val, _, _ = split_for(recs, tcfg)
    vs = make_validation(val, int(tcfg.window_s * frontend.cfg.sample_rate), tcfg.seed,
                         tcfg.val_per_call_file, tcfg.val_per_background_file, tcfg.augment)
    return vs, len(val)


def variant_table(what: str, vs: ValidationSet, files: int, frontend: Frontend,
                  weights: list[str], variants: Iterable[tuple[str, np.ndarray]]) -> None:
    """Every model on every variant of the windows: balanced ROC-AUC, calls and
    backgrounds above 0.5."""
    print(f"\n{len(vs.labels)} validation windows of {files} held-out files; balanced "
          "ROC-AUC, calls above 0.5, backgrounds above 0.5:\n")
    print(f"| {what} | " + " | ".join(Path(w).name for w in weights) + " |")
    print("|---|" + "---|" * len(weights))
    models = [load_network(w)[0] for w in weights]
    for name, waves in variants:
        cells = []
        for model in models:
            s = score(model, frontend, waves, torch.device("cpu"))
            fig = figures(ValidationSet(waves, vs.labels, vs.sources), s)
            cells.append(f"{fig['balanced_roc_auc']:.3f}, {np.mean(s[vs.labels == 1] > 0.5):.2f}"
                         f", {np.mean(s[vs.labels == 0] > 0.5):.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


def sensitivity_table(data: Path, frontend: Frontend, cache: AudioCache,
                      weights: list[str]) -> None:
    vs, files = held_out_windows(data, frontend, cache, weights[0])
    unit = vs.waves / np.sqrt(np.mean(np.square(vs.waves, dtype=np.float64), axis=1,
                                      keepdims=True))
    variant_table("level dB re 0.05", vs, files, frontend, weights,
                  ((f"{level_db:+d}", (unit * REFERENCE_RMS * 10 ** (level_db / 20))
                    .astype(np.float32)) for level_db in LEVELS_DB))


def main(argv: list[str]) -> None:
    data = Path(argv[0] if argv else "../shared/data")
    frontend = Frontend(default_config().frontend)
    cache = AudioCache(default_cache_dir(), frontend.cfg.sample_rate, DEFAULT_VARIANTS)
    level_table(data, frontend, cache)
    if len(argv) > 1:
        sensitivity_table(data, frontend, cache, argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
