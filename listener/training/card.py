"""Writing a trained network: our safetensors layout and a markdown model card."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from listener.atomic import atomic_write
from listener.config import FrontendConfig
from listener.model.checkpoints import load_model
from listener.model.levels import REFERENCE_RMS, levels_dbfs
from listener.model.network import BAND_NORM_KEY
from listener.training.trainer import TrainConfig, TrainResult


def save_weights(state_dict: dict[str, torch.Tensor], out: Path, half: bool,
                 metadata: dict[str, str]) -> None:
    """Write ``state_dict`` (our layout) as safetensors, float16 if ``half``, then load it back.

    Integer buffers (``num_batches_tracked``) stay integers; the daemon loads
    float16 files into its float32 network (``load_state_dict`` converts).
    """
    tensors = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
               for k, v in state_dict.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    load_model(out)  # proves the file loads strictly, as the daemon will load it


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _history_table(result: TrainResult) -> str:
    rows = [f"| {h['epoch']} | {'-' if h['loss'] is None else format(h['loss'], '.4f')} | "
            f"{h['val_score']:.3f} | {h['val_roc_auc']:.3f} | {h['val_pr_auc']:.3f} |"
            for h in result.history]
    return ("| epoch | train loss | val balanced ROC-AUC | val ROC-AUC | val PR-AUC |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows))


def _source_table(result: TrainResult) -> str:
    best, start = result.best_figures, result.history[0]
    rows = []
    for name, row in sorted(best.get("sources", {}).items()):
        before = start.get("sources", {}).get(name, {})
        auc = f"{row['roc_auc']:.3f}" if "roc_auc" in row else ""
        rows.append(f"| {name} | {row['windows']} | {before.get('above_0.5', float('nan')):.2f} "
                    f"| {row['above_0.5']:.2f} | {auc} |")
    return ("| held-out source | windows | above 0.5 at epoch 0 | above 0.5 (kept weights) "
            "| ROC-AUC vs all negatives |\n|---|---|---|---|---|\n" + "\n".join(rows))


def _sites(files: dict[str, Any]) -> str:
    lines = []
    for s in files.get("sites", []):
        lines.append(f"- Site audio `{s['folder']}`: {s['files']} files, {s['windows']} windows; "
                     f"{s['left_out']} scored above {s['max_score']} by the screening model "
                     f"were left out (they may hold calls); {s['seconds_kept']:.0f} s kept as "
                     "beds and negatives.")
    lines += [f"- Validation: {note}." for note in files.get("lineage", [])]
    if files.get("reviews"):
        r = files["reviews"]
        lines.append(f"- Reviews: {r.get('yes', 0)} yes (calls), {r.get('no', 0)} no (hard "
                     f"negatives), {r.get('skipped', 0)} skipped (don't know or no clip).")
    return "\n".join(lines)


def _levels(cfg: TrainConfig) -> str:
    lo, hi = cfg.augment.gain_db
    lo_fs, hi_fs = levels_dbfs(cfg.augment.gain_db)
    return (f"{lo:+g}..{hi:+g} dB re {REFERENCE_RMS:g} RMS, {lo_fs:.0f} to {hi_fs:.0f} dBFS "
            "(compare a station's `listener_audio_level_dbfs`: far outside, the model hears "
            "audio it never trained at)")


def _input(result: TrainResult) -> str:
    """Read from the weights (a fine-tune keeps its start's input, whatever was asked)."""
    if BAND_NORM_KEY in result.state_dict:
        return ("each mel band's median over the window is subtracted before the network "
                "(`--band-norm`): a gain, or a steady noise colour, cancels")
    return "the frontend's dB spectrogram as it is, as OrcaHello's network takes it"


def _teacher(cfg: TrainConfig, files: dict[str, Any]) -> str:
    if cfg.teacher is None:
        return ""
    w = cfg.teacher_weight
    digest = f" (sha256 {files['teacher_sha256'][:16]})" if files.get("teacher_sha256") else ""
    return (f"\n- Teacher: `{Path(cfg.teacher).name}`{digest} (`--teacher`): each window's "
            f"target is {1 - w:g} x its label + {w:g} x the teacher's call probability on the "
            f"same input; the files the teacher trained on count as this model's.")


#: Said in the card and by ``listener train`` when no epoch of a run from scratch
#: beat its untrained network on validation.
NOTHING_LEARNT = ("no trained epoch scored above the untrained network (epoch 0) on "
                  "validation: this run learnt nothing that holds on held-out files; train "
                  "longer (--epochs, --steps) or on more data")


def _kept_clause(cfg: TrainConfig, result: TrainResult, checked: bool) -> str:
    """What the Run line adds after the kept epoch, when the epoch kept needs a word."""
    if result.learnt_nothing:
        return f"; **{NOTHING_LEARNT}**"
    if result.best_epoch == 0 and checked:
        return "; **the starting weights were kept** (see the fine-tune check)"
    if result.best_epoch == 0 and cfg.init:
        return "; **no epoch beat the starting weights, which were kept**"
    return ""


def model_card(out: Path, cfg: TrainConfig, result: TrainResult, data: str,
               files: dict[str, Any], half: bool, model_id: str | None = None) -> str:
    """The markdown card: what it is, the data, the recipe, held-out figures."""
    # The digest names the starting weights wherever the recipe's path pointed (often a
    # temporary copy).
    digest = f" (sha256 {files['init_sha256'][:16]})" if files.get("init_sha256") else ""
    start = (f"fine-tuned from `{Path(cfg.init).name}`{digest}" if cfg.init
             else "trained from scratch")
    kept = _kept_clause(cfg, result, bool(files.get("check")))
    check = "" if not files.get("check") else f"\n- Fine-tune check: {files['check']}."
    epoch0 = ("the starting weights" if cfg.init
              else "the untrained network: the chance level, never kept")
    declared = ("" if model_id is None else f"\n- Model id: `{model_id}` (what the console, "
                "`/metrics` and the detect and evaluation JSON call it)\n")
    shares = "; ".join(f"{k}: " + ", ".join(f"{s} {p:.0%}" for s, p in v.items())
                       for k, v in result.shares.items())
    return f"""# Model card: {out.name}

A {cfg.architecture} killer-whale call detector {start} by `listener train`
through the daemon's own frontend (`listener.model.frontend.Frontend`,
{_frontend(files.get("frontend"))}). Class 1 = killer-whale call.
{declared}
## Data
- Source: `{data}`; {files['train']} training recordings and {files['val']} held-out
  ones (whole files held out, {cfg.val_fraction:.0%} of every class and source, seed
  {cfg.seed}{_val_seed(cfg)}).
- Calls: {files['calls']} recordings; background: {files['backgrounds']}.
  Skipped: {files['skipped']}.
{_sites(files)}
- Draws per source (files ** {cfg.augment.source_power}): {shares}.

## Recipe
- Input: {_input(result)}.
- Window levels: {_levels(cfg)}.{_teacher(cfg, files)}

```json
{json.dumps(cfg.to_json(), indent=1)}
```

## Run
- Kept epoch {result.best_epoch} of {len(result.history) - 1} (epoch 0 = {epoch0}){kept};
  stopped by {result.stop}. Validation balanced ROC-AUC
  {result.best_score:.3f}, PR-AUC {result.best_pr_auc:.3f} (augmented windows from the
  held-out files; every source weighs the same).{check}
- Time {result.seconds / 60:.1f} min on {result.device} ({cpu_model()}, {torch.get_num_threads()}
  threads); autocast {result.autocast or 'off (float32)'}.
- Weights: {'float16' if half else 'float32'} safetensors, listener layout.

{_history_table(result)}

Held-out windows per source (validation split of the training data):

{_source_table(result)}
"""


def write_card(out: Path, text: str) -> Path:
    card = out.with_suffix(".md")
    card.write_text(text, encoding="utf-8")
    return card


def _frontend(frontend: FrontendConfig | None) -> str:
    """The settings the network learnt its input from: another frontend scores it wrongly."""
    if frontend is None:
        return "default `frontend` settings"
    defaults = FrontendConfig().model_dump(mode="json")
    changed = {k: v for k, v in frontend.model_dump(mode="json").items() if v != defaults[k]}
    if not changed:
        return "default `frontend` settings"
    return ("`frontend` settings " + ", ".join(f"{k}: {v}" for k, v in changed.items())
            + " (the rest default; score it with the same settings)")


def _val_seed(cfg: TrainConfig) -> str:
    if cfg.val_seed is None:
        return ""
    return f"; their validation windows drawn with seed {cfg.val_seed}"
