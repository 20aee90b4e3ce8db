"""Metrics against values computed by hand on tiny scored sets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from listener.config import DetectionConfig
from listener.quality.evaluate import ScoredClips, rule_detects
from listener.quality.metrics import (
    average_precision,
    bootstrap_ci,
    confusion,
    roc_auc,
)
from listener.quality.report import threshold_pair

# Scores high to low: 0.9 (call), 0.8 (no call), 0.7 (call), 0.4 (no call), 0.2 (call)
LABELS = np.array([1, 0, 1, 0, 1])
SCORES = np.array([0.9, 0.8, 0.7, 0.4, 0.2])


def test_roc_auc_by_hand() -> None:
    # Pairs (call, no call) ranked right: (0.9,0.8) (0.9,0.4) (0.7,0.4) = 3 of 6.
    assert roc_auc(LABELS, SCORES) == pytest.approx(3 / 6)
    assert roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)  # tie = half
    assert math.isnan(roc_auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_average_precision_by_hand() -> None:
    # Recall steps at ranks 1, 3, 5 with precision 1, 2/3, 3/5: AP = (1 + 2/3 + 3/5) / 3.
    assert average_precision(LABELS, SCORES) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_confusion_and_rates() -> None:
    c = confusion(LABELS, SCORES > 0.5)
    assert (c.tp, c.fp, c.tn, c.fn) == (2, 1, 1, 1)
    assert c.precision == pytest.approx(2 / 3) and c.recall == pytest.approx(2 / 3)
    assert c.f1 == pytest.approx(2 / 3)


def test_bootstrap_interval_brackets_the_value_and_is_seeded() -> None:
    groups = [np.array([i]) for i in range(len(LABELS))]

    def metric(i: np.ndarray) -> float:
        return float(np.mean(SCORES[i]))

    lo, hi = bootstrap_ci(metric, groups, n=300, seed=1)
    assert lo <= np.mean(SCORES) <= hi and lo < hi
    assert (lo, hi) == bootstrap_ci(metric, groups, n=300, seed=1)


def test_threshold_pair_reaches_the_target_precision() -> None:
    units = [np.array([0.9, 0.9, 0.6]), np.array([0.6, 0.6, 0.6]), np.array([0.9, 0.2, 0.2]),
             np.array([0.2, 0.2, np.nan])]
    clips = ScoredClips(np.zeros(4), np.array([1, 0, 1, 0]), np.arange(4), units,
                        np.zeros(4, bool), [None] * 4)
    # local 0.5, global 3: clips 0 and 1 -> one false alarm.
    assert list(rule_detects(units, 0.5, 3)) == [True, True, False, False]
    rec = threshold_pair(clips, "precision", 1.0)
    # Precision 1 needs local >= 0.6 (drops clip 1); global 1 then also catches clip 2.
    assert (rec["local_threshold"], rec["global_threshold"]) == (0.85, 1)
    assert (rec["precision"], rec["recall"]) == (1.0, 1.0)
    assert DetectionConfig().global_threshold == 3
