"""The new and the previous demo model on the recipe's validation windows.

Run by train_demo_model.sh:

    python3 scripts/demo_selection.py CARD.md DATA NEW PREVIOUS [TRAINED_ON.txt]

The held-out files are the ones ``listener train`` validated the new model on
(the split, seed and window counts from the recipe in its metadata). The rule,
fixed before any held-out check: the new model replaces the previous one when
its balanced ROC-AUC is higher on windows of the held-out files that *no*
compared model trained on (the digests each records in ``trained_on``, and
the paths listed in TRAINED_ON.txt, if given, for models that predate that
record).
Scored on files it learnt from, a model looks better than it is. The held-out
clips are never used to choose: that would tune the model to the test.
Appends a ``## Selection`` section to the card and prints the verdict.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from listener.config import default_config
from listener.model.ensemble import load_network
from listener.model.frontend import Frontend
from listener.model.lineage import digest, read_lineage
from listener.model.metadata import safetensors_metadata
from listener.training.augment import AugmentConfig
from listener.training.cache import DEFAULT_VARIANTS, AudioCache, default_cache_dir
from listener.training.data import Recording
from listener.training.run import TrainInputs, gather, split_for
from listener.training.trainer import TrainConfig
from listener.training.validation import (
    POOLED_DRAWS,
    ValidationSet,
    make_validation,
    pooled_figures,
    score,
)

MARKER = "\n## Selection"
#: How much lower on the previous recipe's windows the new model may score (the
#: figure moves by about this much between epochs).
EARLIER_TOLERANCE = 0.01
SELECTION_DRAWS = POOLED_DRAWS
HEADER = ("| model | windows | balanced ROC-AUC (each draw) | ROC-AUC | PR-AUC | "
          "call windows above 0.5 "
          "(mean over sources) | background windows above 0.5 (mean over sources) |")


def recipe_of(weights: str) -> TrainConfig:
    """The recipe ``listener train`` wrote into the weights' metadata (one place for it)."""
    return TrainConfig.from_json(json.loads(safetensors_metadata(weights)["recipe"]))


def candidate_recipe(new: str, previous: str) -> TrainConfig:
    """The new model's recipe; an averaged ensemble (``listener ensemble``) records none,
    so its windows are the previous model's recipe's, split and screened without a start."""
    if "recipe" in safetensors_metadata(new):
        return recipe_of(new)
    return replace(recipe_of(previous), init=None)


def unseen(val: list[Recording], weights: list[str], listed: set[str], train_dir: Path,
           ) -> list[Recording]:
    """The held-out recordings that none of ``weights`` trained on."""
    seen = set().union(*(read_lineage(w).digests for w in weights))
    root = train_dir.resolve()
    return [r for r in sorted(val, key=lambda r: (not r.positive, r.source, str(r.path)))
            if digest(r.path) not in seen and not (
        r.path.resolve().is_relative_to(root)
        and r.path.resolve().relative_to(root).as_posix() in listed)]


def read_listed(path: Path) -> set[str]:
    """The paths of a TRAINED_ON.txt list (``#`` lines are comments)."""
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")}


def row(name: str, path: str, draws: list[ValidationSet]) -> tuple[float, list[float], str]:
    """One model on a set's draws: pooled balanced AUC, each draw's, and the table row."""
    model, _ = load_network(path)
    frontend = Frontend(default_config().frontend)
    per = [score(model, frontend, d.waves, torch.device("cpu")) for d in draws]
    fig, each = pooled_figures(draws, per)
    src: dict[str, dict[str, float]] = fig["sources"]  # type: ignore[assignment]
    bg = np.mean([v["above_0.5"] for k, v in src.items() if k.startswith("background:")])
    call = np.mean([v["above_0.5"] for k, v in src.items() if k.startswith("call:")])
    return float(fig["balanced_roc_auc"]), each, (  # type: ignore[arg-type]
        f"| {name} (`{Path(path).name}`) | {sum(len(d.labels) for d in draws)} | "
        f"{fig['balanced_roc_auc']:.3f} ({min(each):.3f}-{max(each):.3f}) | "
        f"{fig['roc_auc']:.3f} | {fig['pr_auc']:.3f} | {call:.2f} | {bg:.2f} |")


def table_rows(sets: dict[str, list[ValidationSet]], models: dict[str, str],
               ) -> tuple[dict[str, list[str]], dict[str, float], dict[str, list[float]]]:
    """Every model on every window set: table rows, pooled balanced AUCs keyed
    ``set:model``, and each draw's."""
    scores: dict[str, float] = {}
    draws: dict[str, list[float]] = {}
    rows: dict[str, list[str]] = {k: [] for k in sets}
    for which, windows in sets.items():
        for name, path in models.items():
            auc, each, line = row(name, path, windows)
            rows[which].append(line)
            scores[f"{which}:{name}"] = auc
            draws[f"{which}:{name}"] = each
    return rows, scores, draws


def _seen_section(held_out: int, unseen_files: int, rows: list[str]) -> str:
    """All held-out files, when a compared model trained on some (else the table above)."""
    if held_out == unseen_files:
        return ""
    return (f"All {held_out} held-out files (a compared model or its chain trained on "
            f"{held_out - unseen_files} of them, so it scores optimistically here):\n\n"
            f"{HEADER}\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n")


def _range(lo_hi: tuple[float, float]) -> str:
    return f"{lo_hi[0]:+g}..{lo_hi[1]:+g}"


def _eq(aug: AugmentConfig) -> str:
    return f"equaliser +-{aug.eq_db:g} dB" if aug.eq_db else "no equaliser"


def _verdict(scores: dict[str, float], draws: dict[str, list[float]] | None = None,
             ) -> tuple[bool, str]:
    """The rule: higher on the new recipe's windows, not lower on the previous recipe's
    (pooled over the draws; the gain in each draw is reported, not required)."""
    new, old = scores["unseen:new"], scores["unseen:previous demo model"]
    new_earlier, old_earlier = scores["earlier:new"], scores["earlier:previous demo model"]
    wins = new > old and new_earlier >= old_earlier - EARLIER_TOLERANCE
    outcome = "The new model replaces the previous one" if wins else "The previous model stays"
    spread = ""
    if draws:
        gains = [a - b for a, b in zip(draws["unseen:new"], draws["unseen:previous demo model"],
                                       strict=True)]
        spread = f", gain per draw {min(gains):+.3f} to {max(gains):+.3f}"
    return wins, (f"**{outcome}** (balanced ROC-AUC on unseen files {new:.3f} against "
                  f"{old:.3f}{spread}; on the previous recipe's windows {new_earlier:.3f} "
                  f"against {old_earlier:.3f}).")


def main(card: Path, data: Path, new: str, previous: str, listed: set[str]) -> bool:
    cfg = default_config()
    tcfg = candidate_recipe(new, previous)
    inputs = TrainInputs(data=[data / "train"], backgrounds=[data / "hls" / "rpi_orcasound_lab"],
                         screen_weights=tcfg.init or previous)
    cache = AudioCache(default_cache_dir(), cfg.frontend.sample_rate, DEFAULT_VARIANTS)
    recordings, _, _ = gather(inputs, cfg, tcfg, cache)
    _, val, _, _ = split_for(recordings, tcfg)
    clean = unseen(val, [new, previous], listed, data / "train")
    n = round(tcfg.window_s * cfg.frontend.sample_rate)
    # "earlier": the unseen files' windows as the previous recipe made them
    # (its levels and SNRs), to show a win that only the new recipe's
    # windows give; the rule uses the new recipe's.
    earlier = recipe_of(previous).augment
    # "all" only when a compared model trained on some held-out files (else it is "unseen").
    wanted = [("unseen", clean, tcfg.augment), ("earlier", clean, earlier)]
    if len(clean) < len(val):
        wanted.append(("all", val, tcfg.augment))
    sets = {name: [make_validation(recs, n, tcfg.seed + k, tcfg.val_per_call_file,
                                   tcfg.val_per_background_file, aug,
                                   rate=cfg.frontend.sample_rate)
                   for k in range(SELECTION_DRAWS)]
            for name, recs, aug in wanted}
    rows, scores, draws = table_rows(sets, {"new": new, "previous demo model": previous})
    wins, verdict = _verdict(scores, draws)
    text = card.read_text(encoding="utf-8").split(MARKER)[0].rstrip("\n")
    table = "\n|---|---|---|---|---|---|---|\n"
    seen = _seen_section(len(val), len(clean), rows.get("all", []))
    card.write_text(text + f"""

{MARKER.strip()}

The rule, fixed before the held-out check was run: the new model replaces the
previous one when its balanced ROC-AUC is higher on windows of held-out files
that neither model (nor any model it was fine-tuned from) trained on: {len(clean)}
of the {len(val)} held-out files, {SELECTION_DRAWS} independent draws of their windows
pooled (one draw moves a model's figure by several hundredths); and, on the
same files' windows made by the previous model's recipe, no more than
{EARLIER_TOLERANCE:g} lower (a model always looks better on windows made the way it
was trained: it must not buy that by losing the conditions the previous one
handled). The held-out clips above are
reported, never used to choose: that would tune the model to the test.

{verdict}

Held-out files neither model trained on:

{HEADER}{table}""" + "\n".join(rows["unseen"]) + f"""

{seen}The unseen files again, their windows made by the previous model's recipe
(window levels {_range(earlier.gain_db)} dB, SNRs {_range(earlier.snr_db)} dB,
{_eq(earlier)}; the rule above uses the new recipe's, {_range(tcfg.augment.gain_db)} and
{_range(tcfg.augment.snr_db)} dB, {_eq(tcfg.augment)}):

{HEADER}{table}""" + "\n".join(rows["earlier"]) + "\n", encoding="utf-8")
    print(verdict.replace("**", ""))
    return wins


if __name__ == "__main__":
    args = sys.argv[1:]
    # Exit 3: the previous model stays (train_demo_model.sh then puts it back).
    sys.exit(0 if main(Path(args[0]), Path(args[1]), args[2], args[3],
                       read_listed(Path(args[4])) if len(args) > 4 else set()) else 3)
