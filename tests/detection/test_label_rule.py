"""The multi-class rule: target scores, strategies, dominant label and the comment convention."""

from __future__ import annotations

import pytest

from listener.config import RuleConfig
from listener.detection.labels import ClipLabels, LabelledAggregator, LabelledWindow, LabelRule

LABELS = ("water", "resident", "transient", "humpback", "vessel", "jingle", "human")


def _probs(**p: float) -> tuple[float, ...]:
    rest = (1.0 - sum(p.values())) / (len(LABELS) - len(p))
    return tuple(p.get(lab, rest) for lab in LABELS)


def _windows(rows: list[tuple[float, ...]], hop: float = 1.0, win: float = 2.0
             ) -> list[LabelledWindow]:
    return [LabelledWindow(i * hop, i * hop + win, p) for i, p in enumerate(rows)]


def _rule(strategy: str = "per_second", targets: tuple[str, ...] = ("resident", "transient"),
          **kw: float) -> LabelRule:
    return LabelRule(LABELS, targets, RuleConfig(strategy=strategy, **kw), 2.0, 1.0, 10.0)


def test_positive_clip_names_its_dominant_target_and_the_extra_label() -> None:
    rows = [_probs(vessel=0.9)] * 3 + [_probs(transient=0.8)] * 4 + [_probs(resident=0.6)]
    clip = _rule().decide(_windows(rows), 0.0, 10.0, "pods")
    assert clip.clip.detected
    assert clip.labels.label == "transient"
    assert clip.labels.extra_label == "vessel"
    assert clip.labels.comments == "AI: transient and vessel"
    named = [lab for s, lab in zip(clip.clip.seconds, clip.labels.second_labels, strict=True)
             if s.positive]
    assert set(named) <= {"transient", "resident"} and "transient" in named


def test_targets_sum_their_probabilities() -> None:
    # Neither target alone passes 0.5, together they do.
    rows = [_probs(resident=0.3, transient=0.3)] * 9
    assert _rule().decide(_windows(rows), 0.0, 10.0).clip.detected
    assert not _rule(targets=("resident",)).decide(_windows(rows), 0.0, 10.0).clip.detected


def test_negative_clip_has_no_label_and_no_comment() -> None:
    clip = _rule().decide(_windows([_probs(water=0.9)] * 9), 0.0, 10.0)
    assert not clip.clip.detected
    assert clip.labels.label is None and clip.labels.comments == ""


@pytest.mark.parametrize(("strategy", "kw", "detected", "confidence"), [
    # two windows above 0.5 (0.9, 0.7): mean 0.8
    ("mean_thresholded", {"global_threshold": 2}, True, 80.0),
    ("mean_thresholded", {"global_threshold": 3}, False, 80.0),
    # top 3 of (0.9, 0.7, 0.4, 0.1...): mean 0.6667
    ("mean_top_k", {"top_k": 3, "top_k_threshold": 0.6}, True, 100 * 2.0 / 3),
    ("mean_top_k", {"top_k": 3, "top_k_threshold": 0.7}, False, 100 * 2.0 / 3),
])
def test_file_level_strategies(strategy: str, kw: dict, detected: bool,
                               confidence: float) -> None:
    scores = [0.9, 0.7, 0.4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    rows = [_probs(resident=s) for s in scores]
    clip = _rule(strategy, targets=("resident",), **kw).decide(_windows(rows), 0.0, 10.0)
    assert clip.clip.detected is detected
    assert clip.clip.confidence == pytest.approx(confidence)


def test_aggregator_cuts_the_station_clip_grid_and_keeps_probabilities() -> None:
    agg = LabelledAggregator(_rule(), "pods")
    rows = [_probs(resident=0.9)] * 20
    clips = []
    for w in _windows(rows):
        clips.extend(agg.add(w))
    clips.extend(agg.flush(21.0))
    assert [c.clip.start_s for c in clips] == [0.0, 10.0]  # window 19 s straddles 20 s
    assert len(clips[1].windows) == 9
    assert len(clips[0].windows) == 9  # windows 0..8 lie inside [0, 10)
    assert clips[0].windows[0].probs == rows[0]
    assert clips[0].labels.label == "resident" and clips[0].model_id == "pods"


def test_comment_without_extra_label() -> None:
    assert ClipLabels("resident", ()).comments == "AI: resident"
