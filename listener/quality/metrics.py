"""Binary-classifier metrics on scores and labels, in plain numpy.

Conventions: ``labels`` are 0/1 (1 = call), ``scores`` are probabilities of a
call, a prediction is positive when ``score > threshold`` (strictly, as the
decision rule's local threshold). PR-AUC is *average precision* (the step
interpolation scikit-learn uses): ``sum_k (R_k - R_{k-1}) P_k`` over the
distinct thresholds, which never over-states the area the way trapezoids do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Counts:
    """A confusion matrix: true/false positives/negatives."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def precision(self) -> float:
        """tp / (tp + fp); 1.0 when nothing was predicted positive (no false alarm made)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """tp / (tp + fn); 0.0 when there are no positives."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_json(self) -> dict[str, float | int]:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn,
                "precision": self.precision, "recall": self.recall, "f1": self.f1}


def confusion(labels: np.ndarray, predicted: np.ndarray) -> Counts:
    """Counts of 0/1 ``labels`` against boolean ``predicted``."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(predicted).astype(bool)
    return Counts(int(np.sum(y & p)), int(np.sum(~y & p)), int(np.sum(~y & ~p)),
                  int(np.sum(y & ~p)))


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of equal length, got {y.shape} "
                         f"and {s.shape}")
    return y, s


def _curve_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                    np.ndarray]:
    """Cumulative (tp, fp) at each distinct score, highest first, and those scores."""
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = np.cumsum(1 - y)[last]
    return tp, fp, s[last]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN without both classes."""
    y, s = _check(labels, scores)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if not n_pos or not n_neg:
        return float("nan")
    tp, fp, _ = _curve_points(y, s)
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def pr_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                              np.ndarray]:
    """``(precision, recall, thresholds)``, one point per distinct score, highest first.

    Point k predicts positive every item scoring >= thresholds[k].
    """
    y, s = _check(labels, scores)
    tp, fp, thr = _curve_points(y, s)
    n_pos = max(int(y.sum()), 1)
    return tp / np.maximum(tp + fp, 1), tp / n_pos, thr


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """PR-AUC as average precision; NaN without positives."""
    y, s = _check(labels, scores)
    if not y.sum():
        return float("nan")
    precision, recall, _ = pr_curve(y, s)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def bootstrap_ci(metric: Callable[[np.ndarray], float], groups: Sequence[np.ndarray],
                 n: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``metric(indices)`` over resampled groups.

    Whole groups (all windows of one file) are resampled together, because
    windows of one recording are not independent; give one group per item
    for a plain bootstrap. Draws where the metric is NaN (one class missing)
    are dropped. Returns ``(nan, nan)`` when every draw is NaN.
    """
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        pick = rng.integers(0, len(groups), len(groups))
        value = metric(np.concatenate([groups[i] for i in pick]))
        if not np.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(np.asarray(values), [alpha, 1 - alpha])
    return float(lo), float(hi)
