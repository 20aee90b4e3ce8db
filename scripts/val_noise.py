"""How steady is a validation figure, for a given number of windows per held-out file?

    python3 scripts/val_noise.py [DATA] WEIGHTS [BASELINE]   # DATA: ../shared/data

``listener train`` scores every epoch on one fixed draw of augmented windows
from the held-out files (``--val-per-call-file``, ``--val-per-background-file``),
and keeps the best epoch by that figure. This script draws those windows with
five seeds at several counts per file, and prints, for each count, WEIGHTS'
balanced ROC-AUC over the draws (mean, spread, standard deviation), the same
for BASELINE and the paired difference, and the time one draw takes to score.
The counts the demo recipe uses are chosen from this table.

Reads DATA/train only (WEIGHTS' recipe: its split and seed): never the
held-out clips or the L pod recording.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from demo_selection import recipe_of

from listener.config import default_config
from listener.model.ensemble import load_network
from listener.model.frontend import Frontend
from listener.quality.labels import read_labels
from listener.training.cache import DEFAULT_VARIANTS, AudioCache, default_cache_dir
from listener.training.card import cpu_model
from listener.training.data import load_recordings
from listener.training.run import split_for
from listener.training.validation import figures, make_validation, score

#: (windows per held-out call file, per background file): the recipe's 4 and 6, then more.
COUNTS = ((4, 6), (8, 12), (16, 24))
DRAWS = 5


def _spread(values: list[float]) -> str:
    a = np.asarray(values)
    return f"{a.mean():.3f} ({a.min():.3f}-{a.max():.3f}, sd {a.std(ddof=1):.3f})"


def main(data: Path, weights: list[str]) -> None:
    cfg = default_config()
    frontend = Frontend(cfg.frontend)
    tcfg = recipe_of(weights[0])
    cache = AudioCache(default_cache_dir(), cfg.frontend.sample_rate, DEFAULT_VARIANTS)
    recs, _ = load_recordings(read_labels(data / "train"), frontend, cache=cache)
    _, val, _, _ = split_for(recs, tcfg)
    n = round(tcfg.window_s * cfg.frontend.sample_rate)
    models = [load_network(w)[0] for w in weights]
    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads; {len(val)} held-out files "
          f"of {data / 'train'}; {DRAWS} draws per count; balanced ROC-AUC mean (range, sd)\n")
    names = [Path(w).name for w in weights]
    print("| windows per call, background file | windows | " + " | ".join(names)
          + (" | difference |" if len(names) == 2 else " |") + " seconds to score one draw |")
    print("|---|---|" + "---|" * (len(names) + (len(names) == 2)) + "---|")
    for per_call, per_bed in COUNTS:
        aucs: list[list[float]] = [[] for _ in models]
        seconds = []
        for k in range(DRAWS):
            vs = make_validation(val, n, tcfg.seed + k, per_call, per_bed, tcfg.augment,
                                 rate=cfg.frontend.sample_rate)
            for i, model in enumerate(models):
                t0 = time.perf_counter()
                s = score(model, frontend, vs.waves, torch.device("cpu"))
                seconds.append(time.perf_counter() - t0)
                aucs[i].append(figures(vs, s)["balanced_roc_auc"])
        cells = [_spread(a) for a in aucs]
        if len(models) == 2:
            cells.append(_spread([a - b for a, b in zip(aucs[0], aucs[1], strict=True)]))
        print(f"| {per_call}, {per_bed} | {len(vs.labels)} | " + " | ".join(cells)
              + f" | {np.mean(seconds):.1f} |", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or not args[-1].endswith(".safetensors"):
        sys.exit(__doc__)
    data = Path(args.pop(0)) if not args[0].endswith(".safetensors") else Path("../shared/data")
    main(data, args)
