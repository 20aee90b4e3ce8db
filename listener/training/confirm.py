"""A fine-tune's gain, checked on fresh windows before its weights replace the start's.

Every epoch is scored on one fixed draw of augmented windows from the
held-out files, and the kept epoch is the best of many such figures: the
largest of several noisy numbers, so its lead over the starting weights
(epoch 0) is partly the draw's luck. Measured on the demo model's recipe:
a fine-tune led its start by 0.010 on the per-epoch draw (0.959 against
0.949) and trailed it by 0.006 on five draws pooled. So when
``--init`` weights were beaten, both are scored again on ``confirm_draws``
new draws of the same held-out files (other seeds, the same recipe), and the
starting weights stay unless the kept epoch is higher there too: a fine-tune
never writes weights that only looked better.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any

import torch

from listener.config import FrontendConfig
from listener.model.frontend import Frontend
from listener.model.network import OrcaResNet, build_for
from listener.training.data import Recording
from listener.training.trainer import TrainConfig, TrainResult
from listener.training.validation import ValidationSet, make_validation, pooled_figures, score

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Confirmation:
    """Both models' balanced ROC-AUC on fresh draws: pooled, and per draw."""

    epoch: int
    kept: float
    start: float
    kept_each: tuple[float, ...]
    start_each: tuple[float, ...]
    windows: int

    @property
    def holds(self) -> bool:
        return self.kept > self.start

    def text(self) -> str:
        gains = [a - b for a, b in zip(self.kept_each, self.start_each, strict=True)]
        verdict = ("the gain holds" if self.holds else
                   "the gain does not hold: the starting weights are kept")
        return (f"on {len(gains)} fresh draws of the held-out windows ({self.windows} "
                f"windows), epoch {self.epoch} scored {self.kept:.3f} against the starting "
                f"weights' {self.start:.3f} (gain per draw {min(gains):+.3f} to "
                f"{max(gains):+.3f}): {verdict}")

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "kept": round(self.kept, 4), "start": round(self.start, 4),
                "kept_each": [round(v, 4) for v in self.kept_each],
                "start_each": [round(v, 4) for v in self.start_each],
                "windows": self.windows, "holds": self.holds}


def confirm(cfg: TrainConfig, val_set: list[Recording], frontend_cfg: FrontendConfig,
            result: TrainResult, start: OrcaResNet, device: torch.device) -> Confirmation:
    """Score the kept weights and ``start`` (the ``--init`` weights) on
    ``cfg.confirm_draws`` new draws."""
    frontend = Frontend(frontend_cfg).to(device)
    n = round(cfg.window_s * frontend_cfg.sample_rate)
    # Seeds past the per-epoch draw's: windows the choice of epoch never saw.
    draws = [make_validation(val_set, n, cfg.draw_seed + 1 + k, cfg.val_per_call_file,
                             cfg.val_per_background_file, cfg.augment,
                             rate=frontend_cfg.sample_rate)
             for k in range(cfg.confirm_draws)]
    kept = build_for(cfg.architecture, result.state_dict)
    kept.load_state_dict(result.state_dict)
    figures = [_pooled(m.to(device), frontend, draws, device) for m in (kept, start)]
    (kept_auc, kept_each), (start_auc, start_each) = figures
    return Confirmation(result.best_epoch, kept_auc, start_auc, tuple(kept_each),
                        tuple(start_each), sum(len(d.labels) for d in draws))


def _pooled(model: OrcaResNet, frontend: Frontend, draws: list[ValidationSet],
            device: torch.device) -> tuple[float, list[float]]:
    fig, each = pooled_figures(draws, [score(model, frontend, d.waves, device) for d in draws])
    return float(fig["balanced_roc_auc"]), each  # type: ignore[arg-type]


def settle(result: TrainResult, check: Confirmation, start: OrcaResNet) -> TrainResult:
    """The result to write: as trained when the gain holds, else ``start``'s weights
    (epoch 0, with its per-epoch figures)."""
    log.info("fine-tune check: %s", check.text())
    if check.holds:
        return result
    weights = {k: v.detach().cpu().clone() for k, v in start.state_dict().items()}
    return replace(result, state_dict=weights, best_epoch=0,
                   best_score=float(result.history[0]["val_score"]))


def needs_check(cfg: TrainConfig, result: TrainResult, val_set: list[Recording]) -> bool:
    """A fine-tune whose kept epoch beat its start, with windows to check it on."""
    return (cfg.init is not None and result.best_epoch > 0 and cfg.confirm_draws > 0
            and bool(val_set) and math.isfinite(result.best_score))
