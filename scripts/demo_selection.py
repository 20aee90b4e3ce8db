"""The new and the previous demo model on the recipe's validation windows.

Run by train_demo_model.sh:

    python3 scripts/demo_selection.py CARD.md DATA NEW PREVIOUS START

The windows are the ones ``listener train`` validated on (held-out files of
``DATA/train`` and the site audio; the split, seed and window counts from the
recipe in the new model's metadata), so the models are compared on audio none of them trained
on. This, not the held-out clips, is what decides whether the new model
replaces the previous one: choosing by the clips would tune to the test.
Appends a ``## Selection`` section to the card.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from listener.config import default_config
from listener.model.checkpoints import load_model
from listener.model.frontend import Frontend
from listener.training.augment import AugmentConfig
from listener.training.cache import DEFAULT_VARIANTS, AudioCache, default_cache_dir
from listener.training.data import split_by_file
from listener.training.run import TrainInputs, gather
from listener.training.trainer import TrainConfig, score
from listener.training.validation import figures, make_validation

MARKER = "\n## Selection"
HEADER = ("| model | balanced ROC-AUC | ROC-AUC | PR-AUC | call windows above 0.5 (mean over "
          "sources) | background windows above 0.5 (mean over sources) |")


def recipe_of(weights: str) -> TrainConfig:
    """The recipe ``listener train`` wrote into the weights' metadata (one place for it)."""
    with safe_open(weights, framework="pt") as f:
        recipe = json.loads((f.metadata() or {})["recipe"])
    augment = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v
                               for k, v in recipe.pop("augment").items()})
    return TrainConfig(**recipe, augment=augment)


def main(card: Path, data: Path, weights: dict[str, str]) -> None:
    cfg = default_config()
    tcfg = recipe_of(weights["new"])
    inputs = TrainInputs(data=[data / "train"], backgrounds=[data / "hls" / "rpi_orcasound_lab"])
    cache = AudioCache(default_cache_dir(), cfg.frontend.sample_rate, DEFAULT_VARIANTS)
    recordings, _, _ = gather(inputs, cfg, tcfg, cache)
    _, val = split_by_file(recordings, tcfg.val_fraction, tcfg.seed)
    windows = make_validation(val, round(tcfg.window_s * cfg.frontend.sample_rate), tcfg.seed,
                              tcfg.val_per_call_file, tcfg.val_per_background_file, tcfg.augment)
    rows = []
    for name, path in weights.items():
        model, _ = load_model(path)
        fig = figures(windows, score(model, Frontend(cfg.frontend), windows.waves,
                                     torch.device("cpu")))
        src = fig["sources"]
        bg = np.mean([v["above_0.5"] for k, v in src.items() if k.startswith("background:")])
        call = np.mean([v["above_0.5"] for k, v in src.items() if k.startswith("call:")])
        rows.append(f"| {name} (`{Path(path).name}`) | {fig['balanced_roc_auc']:.3f} | "
                    f"{fig['roc_auc']:.3f} | {fig['pr_auc']:.3f} | {call:.2f} | {bg:.2f} |")
    text = card.read_text(encoding="utf-8").split(MARKER)[0].rstrip("\n")
    card.write_text(text + f"""

{MARKER.strip()}

The rule, fixed before the held-out check was run: the new model replaces the
previous one when it scores higher here, on the same {len(windows.labels)} validation windows
(held-out files of the training sources only). The held-out clips above are
reported, never used to choose: that would tune the model to the test.

{HEADER}
|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n", encoding="utf-8")


if __name__ == "__main__":
    card_path, data_dir, new, previous, start = sys.argv[1:6]
    main(Path(card_path), Path(data_dir),
         {"new": new, "previous demo model": previous, "start": start})
