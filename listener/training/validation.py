"""Validation that resembles deployment: held-out files of every source, figures per source.

The windows are built once, from held-out *files* only: each held-out call
is mixed into held-out beds (the same augmentation as training, a fixed
seed), each held-out background gives windows of its own (alone or with
another held-out sound mixed in). Their scores give:

* the selection figure, a *source-balanced* ROC-AUC: every source carries
  the same total weight within its class, so 27 held-out catalogue calls do
  not outvote 7 hydrophone calls;
* per source, the share of windows scored above 0.5 (recall for call
  sources, false-positive rate for background sources) and, for call
  sources, ROC-AUC against every negative window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from listener.model.frontend import Frontend
from listener.quality.metrics import average_precision, roc_auc
from listener.training import augment
from listener.training.augment import AugmentConfig
from listener.training.data import Recording, SourcePool


@dataclass
class ValidationSet:
    """Fixed windows with their labels and sources."""

    waves: np.ndarray
    labels: np.ndarray
    sources: list[str]

    def weights(self) -> np.ndarray:
        """1 / (windows of the same class and source)."""
        out = np.zeros(len(self.labels), dtype=np.float64)
        keys = [(int(y), s) for y, s in zip(self.labels, self.sources, strict=True)]
        for key in set(keys):
            idx = [i for i, k in enumerate(keys) if k == key]
            out[idx] = 1.0 / len(idx)
        return out


def make_validation(val: list[Recording], n: int, seed: int, per_call_file: int,
                    per_background_file: int, cfg: AugmentConfig, *,
                    rate: int) -> ValidationSet:
    """Windows from held-out files only, drawn with their own fixed generator (``rate``:
    the audio's sample rate, the frontend's)."""
    rng = np.random.default_rng([seed, 10**6])
    calls = [r for r in val if r.positive]
    beds = SourcePool([r for r in val if not r.positive], cfg.source_power)
    waves, labels, sources = [], [], []
    for rec in calls:
        for _ in range(per_call_file):
            waves.append(augment.positive_example(rec, beds, n, rng, cfg, rate=rate))
            labels.append(1)
            sources.append(rec.source)
    for rec in (r for r in val if not r.positive):
        own = SourcePool([rec], 1.0)
        for _ in range(per_background_file):
            x = augment.bed(own, n, rng, cfg)
            if rng.random() < cfg.event_p:
                sound, level = augment.placed(beds.draw(rng), n, rng, cfg)
                x = augment.mix(sound, level, x, rng, cfg)
            waves.append(augment.channel(x, rng, cfg, rate=rate))
            labels.append(0)
            sources.append(rec.source)
    if not waves:
        return ValidationSet(np.zeros((0, n), np.float32), np.zeros(0, np.int64), [])
    return ValidationSet(np.stack(waves), np.asarray(labels, dtype=np.int64), sources)


def weighted_roc_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float:
    """ROC-AUC with per-window weights (ties count half); NaN without both classes."""
    pos, neg = labels == 1, labels == 0
    if not pos.any() or not neg.any():
        return float("nan")
    neg_scores, neg_w = scores[neg], weights[neg]
    order = np.argsort(neg_scores, kind="stable")
    sorted_scores, cum = neg_scores[order], np.concatenate([[0.0], np.cumsum(neg_w[order])])
    lo = np.searchsorted(sorted_scores, scores[pos], side="left")
    hi = np.searchsorted(sorted_scores, scores[pos], side="right")
    below, tied = cum[lo], cum[hi] - cum[lo]
    total = float(np.sum(weights[pos] * (below + 0.5 * tied)))
    return total / (float(weights[pos].sum()) * float(neg_w.sum()))


def score(model: torch.nn.Module, frontend: Frontend, waves: np.ndarray, device: torch.device,
          batch: int = 16) -> np.ndarray:
    """Probabilities of a call, eval mode, float32 (as the daemon scores)."""
    model.eval()
    out = [torch.zeros(0)]
    with torch.inference_mode():
        for i in range(0, len(waves), batch):
            x = frontend(torch.from_numpy(np.ascontiguousarray(waves[i:i + batch])).to(device))
            out.append(torch.softmax(model(x).float(), dim=1)[:, 1].cpu())
    return torch.cat(out).numpy().astype(np.float64)


def figures(vs: ValidationSet, scores: np.ndarray) -> dict[str, object]:
    """The epoch's validation figures: balanced and plain AUC, PR-AUC, and per source."""
    if not len(vs.labels):
        return {"balanced_roc_auc": float("nan"), "roc_auc": float("nan"),
                "pr_auc": float("nan"), "sources": {}}
    neg = vs.labels == 0
    per_source: dict[str, dict[str, float | int]] = {}
    for y, source in sorted(set(zip(vs.labels.tolist(), vs.sources, strict=True))):
        mask = np.array([s == source for s in vs.sources]) & (vs.labels == y)
        row: dict[str, float | int] = {"windows": int(mask.sum()),
                                       "above_0.5": round(float(np.mean(scores[mask] > 0.5)), 3)}
        if y == 1:
            both = mask | neg
            row["roc_auc"] = round(roc_auc(vs.labels[both], scores[both]), 3)
        per_source[f"{'call' if y else 'background'}:{source}"] = row
    return {"balanced_roc_auc": weighted_roc_auc(vs.labels, scores, vs.weights()),
            "roc_auc": roc_auc(vs.labels, scores),
            "pr_auc": average_precision(vs.labels, scores), "sources": per_source}


#: Independent draws of validation windows that a comparison of two models pools. One
#: draw of a few hundred windows moves a model's balanced ROC-AUC by up to 0.09 from
#: seed to seed (0.869-0.960 for the demo model on the same files), so one draw cannot
#: rank two close models (docs/quality.md, "How noisy one draw of validation windows is").
POOLED_DRAWS = 5


def pooled_figures(draws: list[ValidationSet], scores: list[np.ndarray],
                   ) -> tuple[dict[str, object], list[float]]:
    """The figures of several draws' windows taken together, and each draw's balanced
    ROC-AUC (every draw weighs the same: its windows are as many)."""
    pooled = ValidationSet(np.zeros((0, 0), np.float32),
                           np.concatenate([d.labels for d in draws]),
                           [s for d in draws for s in d.sources])
    each = [float(figures(d, s)["balanced_roc_auc"])  # type: ignore[arg-type]
            for d, s in zip(draws, scores, strict=True)]
    return figures(pooled, np.concatenate(scores)), each
