"""Writing a trained network: our safetensors layout and a markdown model card."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from listener.model.checkpoints import load_model
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
    tmp = out.with_name(out.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(out)
    load_model(out)  # proves the file loads strictly, as the daemon will load it


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def model_card(out: Path, cfg: TrainConfig, result: TrainResult, data: str,
               files: dict[str, Any], half: bool) -> str:
    """The markdown card: what it is, the data, the recipe, held-out figures."""
    hist = "\n".join(f"| {h['epoch']} | {h['loss']:.4f} | {h['val_pr_auc']:.3f} | "
                     f"{h['val_roc_auc']:.3f} |" for h in result.history)
    return f"""# Model card: {out.name}

A {cfg.architecture} killer-whale call detector trained by `listener train`
through the daemon's own frontend (`listener.model.frontend.Frontend`, default
`frontend` settings). Class 1 = killer-whale call.

## Data
- Source: `{data}`; {files['train']} training files and {files['val']} held-out
  files (split by file, {cfg.val_fraction:.0%} of each class, seed {cfg.seed}).
- Calls: {files['calls']} files; background: {files['backgrounds']} files.
  Skipped: {files['skipped']}.

## Recipe
```json
{json.dumps(cfg.to_json(), indent=1)}
```

## Run
- Best epoch {result.best_epoch} of {len(result.history)}; validation PR-AUC
  {result.best_pr_auc:.3f} (augmented windows from the held-out files).
- Time {result.seconds / 60:.1f} min on {result.device} ({cpu_model()}, {torch.get_num_threads()}
  threads); autocast {result.autocast or 'off (float32)'}.
- Weights: {'float16' if half else 'float32'} safetensors, listener layout.

| epoch | train loss | val PR-AUC | val ROC-AUC |
|---|---|---|---|
{hist}
"""


def write_card(out: Path, text: str) -> Path:
    card = out.with_suffix(".md")
    card.write_text(text, encoding="utf-8")
    return card
