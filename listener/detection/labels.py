"""Multi-class window probabilities -> per-clip decisions that name a label.

A model gives every window a probability per label. The decision rule runs on
the *target score* of each window, the summed probability of the target labels
(``resident`` for SRKW alerts, or several), with one of three strategies
(:class:`~listener.config.RuleConfig`): OrcaHello's per-second rule
(:func:`listener.detection.rule.decide_clip`), ``mean_thresholded`` or
``mean_top_k``. A positive clip is named by its dominant target label; the
``comments`` field follows OrcaHello's convention, ``"AI: <label>"`` plus
``" and <extra>"`` when the most common vessel/human/jingle window label
differs (the moderator portal turns that extra into a suggested tag).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from listener.config import DetectionConfig, RuleConfig
from listener.detection.rule import (
    ClipAggregator,
    ClipResult,
    SecondScore,
    WindowScore,
    decide_clip,
)
from listener.model.backends.base import NEGATIVE_LABELS, default_targets, target_problem

__all__ = ["NEGATIVE_LABELS", "ClipLabels", "LabelRule", "LabelledAggregator", "LabelledClip",
           "LabelledWindow", "default_targets"]

# The classes the comment convention appends ("AI: resident and vessel").
EXTRA_LABELS = ("vessel", "human", "jingle")
_KEY_DIGITS = 6


@dataclass(frozen=True)
class LabelledWindow:
    """One window with every label's probability (in the model's label order)."""

    start_s: float
    end_s: float
    probs: tuple[float, ...]
    utc: datetime | None = None


@dataclass(frozen=True)
class ClipLabels:
    """What a multi-class decision adds to a clip: its label and the comment."""

    label: str | None  # dominant target label (None for a negative clip)
    second_labels: tuple[str | None, ...]  # per unit of clip.seconds
    extra_label: str | None = None

    @property
    def comments(self) -> str:
        """OrcaHello's ``comments``: ``"AI: transient and vessel"`` or ``"AI: transient"``."""
        if not self.label:
            return ""
        extra = f" and {self.extra_label}" if self.extra_label else ""
        return f"AI: {self.label}{extra}"


@dataclass(frozen=True)
class LabelledClip:
    """A clip decided on one model's target score, with its labels."""

    model_id: str
    clip: ClipResult
    labels: ClipLabels
    windows: tuple[LabelledWindow, ...]


class LabelRule:
    """The decision rule of one model on its labels.

    Args:
        labels: the model's label names, in class order.
        targets: the labels that count as a call (a subset of ``labels``).
        rule: strategy and thresholds.
        window_s, hop_s, clip_s: the model's windows and the station's clips.
    """

    def __init__(self, labels: Sequence[str], targets: Sequence[str], rule: RuleConfig,
                 window_s: float, hop_s: float, clip_s: float) -> None:
        if (problem := target_problem(labels, targets)) is not None:
            raise ValueError(problem)
        self.labels = tuple(labels)
        self.targets = tuple(targets)
        self.rule = rule
        self.target_idx = np.array([self.labels.index(t) for t in self.targets])
        self.detection = DetectionConfig(
            window_s=window_s, hop_s=hop_s, clip_s=max(clip_s, window_s),
            local_threshold=rule.local_threshold, global_threshold=rule.global_threshold)

    def target_score(self, probs: Sequence[float]) -> float:
        """P(any target label): the sum of their probabilities, at most 1."""
        return float(min(1.0, np.asarray(probs, dtype=np.float64)[self.target_idx].sum()))

    def score_window(self, w: LabelledWindow) -> WindowScore:
        return WindowScore(w.start_s, w.end_s, self.target_score(w.probs), w.utc)

    def decide(self, windows: Sequence[LabelledWindow], start_s: float, end_s: float,
               model_id: str = "") -> LabelledClip:
        """The clip ``[start_s, end_s)`` from its labelled windows."""
        scored = [self.score_window(w) for w in windows]
        clip = self._strategy(decide_clip(scored, start_s, end_s, self.detection), scored)
        return LabelledClip(model_id, clip, self._labels(clip, windows), tuple(windows))

    def _strategy(self, clip: ClipResult, scored: Sequence[WindowScore]) -> ClipResult:
        r = self.rule
        if r.strategy == "per_second":
            return clip
        if not scored:
            return dataclasses.replace(clip, detected=False, confidence=0.0)
        scores = np.array([w.score for w in scored], dtype=np.float64)
        if r.strategy == "mean_thresholded":
            deciding = np.flatnonzero(scores > r.local_threshold)
            detected = deciding.size >= r.global_threshold
        else:  # mean_top_k
            deciding = np.argsort(-scores, kind="stable")[:r.top_k]
            detected = float(scores[deciding].mean()) >= r.top_k_threshold
        confidence = 100.0 * float(scores[deciding].mean()) if deciding.size else 0.0
        # The positive seconds (the record's predictions) are those the
        # deciding windows cover; the top k of a clip left negative decided nothing.
        if r.strategy == "mean_top_k" and not detected:
            deciding = deciding[:0]
        seconds = _covered(clip, [scored[int(i)] for i in deciding], self.detection.hop_s)
        return dataclasses.replace(clip, detected=detected, confidence=confidence,
                                   seconds=seconds)

    def _best_target(self, probs: np.ndarray) -> str:
        return self.targets[int(np.argmax(probs[self.target_idx]))]

    def _labels(self, clip: ClipResult, windows: Sequence[LabelledWindow]) -> ClipLabels:
        if not windows:
            return ClipLabels(None, tuple(None for _ in clip.seconds))
        probs = np.array([w.probs for w in windows], dtype=np.float64)
        scores = np.array([self.target_score(p) for p in probs])
        hot = scores > self.rule.local_threshold
        # Dominant label: the target with the highest mean probability over
        # the windows that scored positive (all windows if none did).
        label = self._best_target(probs[hot].mean(axis=0) if hot.any() else probs.mean(axis=0))
        per_unit: list[str | None] = []
        hop = self.detection.hop_s
        for s in clip.seconds:
            lo, hi = clip.start_s + s.start_s, clip.start_s + s.start_s + hop
            over = [i for i, w in enumerate(windows) if w.start_s < hi - 1e-6
                    and w.end_s > lo + 1e-6]
            per_unit.append(self._best_target(probs[over].mean(axis=0))
                            if s.positive and over else None)
        argmax = [self.labels[int(i)] for i in probs.argmax(axis=1)]
        extras = Counter(a for a in argmax if a in EXTRA_LABELS).most_common(1)
        extra = extras[0][0] if extras and extras[0][0] != label else None
        if not clip.detected:
            return ClipLabels(None, tuple(per_unit), None)
        return ClipLabels(label, tuple(per_unit), extra)


def _covered(clip: ClipResult, windows: Sequence[WindowScore], hop_s: float
             ) -> tuple[SecondScore, ...]:
    """``clip.seconds`` (scores kept), positive where one of ``windows`` covers them."""
    def hit(lo: float) -> bool:
        return any(w.start_s < lo + hop_s - 1e-6 and w.end_s > lo + 1e-6 for w in windows)

    return tuple(dataclasses.replace(s, positive=hit(clip.start_s + s.start_s))
                 for s in clip.seconds)


class LabelledAggregator:
    """:class:`ClipAggregator` for labelled windows: same clip grid, labels kept."""

    def __init__(self, rule: LabelRule, model_id: str, origin_s: float = 0.0,
                 decided_to: float | None = None) -> None:
        self.rule = rule
        self.model_id = model_id
        self._clips = ClipAggregator(rule.detection, origin_s, decided_to)
        self._pending: dict[float, LabelledWindow] = {}

    def add(self, window: LabelledWindow, score: float | None = None) -> list[LabelledClip]:
        """Add a window; the clips it completes. ``score``: its target score, if the
        caller has it already (:meth:`LabelRule.target_score` of its probabilities)."""
        done = self._clips.add(self.rule.score_window(window) if score is None else
                               WindowScore(window.start_s, window.end_s, score, window.utc))
        self._pending[round(window.start_s, _KEY_DIGITS)] = window
        return [self._label(c) for c in done]

    def flush(self, end_s: float | None = None) -> list[LabelledClip]:
        return [self._label(c) for c in self._clips.flush(end_s)]

    @property
    def open_end_s(self) -> float | None:
        """:attr:`ClipAggregator.open_end_s`."""
        return self._clips.open_end_s

    def close_early(self, end_s: float | None = None) -> list[LabelledClip]:
        """:meth:`ClipAggregator.close_early`: decide the open clip on the windows it has."""
        return [self._label(c) for c in self._clips.close_early(end_s)]

    def _label(self, clip: ClipResult) -> LabelledClip:
        windows = tuple(self._pending.pop(round(w.start_s, _KEY_DIGITS)) for w in clip.windows)
        # Windows straddling a clip boundary belong to no clip: drop them too.
        for key in [k for k in self._pending if k < clip.end_s - 1e-6]:
            del self._pending[key]
        return self.rule.decide(windows, clip.start_s, clip.end_s, self.model_id)
