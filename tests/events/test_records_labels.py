"""OrcaHello's multi-class record fields: globalPredictionLabel, predictions[].label, comments."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from listener.config import DetectionConfig, RuleConfig, StationConfig
from listener.detection.labels import LabelledWindow, LabelRule
from listener.events.records import event_json, make_detection_event, orcahello_record

LABELS = ("water", "resident", "transient", "humpback", "vessel", "jingle", "human")
STATION = StationConfig(id="rpi_orcasound_lab", name="Orcasound Lab",
                        longitude=-123.1735774, latitude=48.5583362)
T0 = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)


def _row(label: str, p: float) -> tuple[float, ...]:
    rest = (1.0 - p) / (len(LABELS) - 1)
    return tuple(p if lab == label else rest for lab in LABELS)


def _event(rows: list[tuple[float, ...]]):  # type: ignore[no-untyped-def]
    rule = LabelRule(LABELS, ("resident", "transient"), RuleConfig(), 3.0, 2.0, 60.0)
    windows = [LabelledWindow(2.0 * i, 2.0 * i + 3.0, r, None) for i, r in enumerate(rows)]
    decided = rule.decide(windows, 0.0, 60.0, "pods-ai")
    clip = decided.clip.__class__(**{**decided.clip.__dict__, "utc_start": T0})
    return make_detection_event(clip, station=STATION, model={"id": "pods-ai"},
                                detection=DetectionConfig(window_s=3.0, hop_s=2.0),
                                stream_key="s", labels=decided.labels)


def test_record_carries_label_fields_as_orcahello_writes_them() -> None:
    rows = ([_row("transient", 0.9)] * 4 + [_row("vessel", 0.8)] * 6 + [_row("water", 0.9)] * 19)
    doc = orcahello_record(_event(rows), "https://a/", "https://i/")
    assert doc["globalPredictionLabel"] == "transient"
    assert doc["comments"] == "AI: transient and vessel"
    assert doc["predictions"] and all(p["label"] == "transient" for p in doc["predictions"])
    # The moderator portal's parse of the comment (its regex, verbatim).
    m = re.match(r"AI:\s*(?P<a>.*?)\s*and\s*(?P<b>.*)", doc["comments"])
    assert m is not None and (m["a"], m["b"]) == ("transient", "vessel")
    assert event_json(_event(rows))["globalPredictionLabel"] == "transient"


def test_mixed_clip_labels_each_prediction() -> None:
    rows = [_row("resident", 0.9)] * 4 + [_row("water", 0.9)] * 4 + [
        _row("transient", 0.95)] * 6 + [_row("water", 0.9)] * 15
    doc = orcahello_record(_event(rows), "", "")
    labels = [p["label"] for p in doc["predictions"]]
    assert "resident" in labels and "transient" in labels
    assert doc["globalPredictionLabel"] == "transient"
    assert doc["comments"] == "AI: transient"


def test_binary_record_stays_as_before() -> None:
    ev = _event([_row("resident", 0.9)] * 29)
    plain = ev.__class__(**{**ev.__dict__, "labels": None})
    doc = orcahello_record(plain, "", "")
    # No label fields: the portal shows a record without one as OrcaHello's.
    assert "globalPredictionLabel" not in doc and "comments" not in doc
    assert all("label" not in p for p in doc["predictions"])


@pytest.mark.parametrize(("rule_cfg", "scores", "seconds"), [
    # Windows 20, 22, 24 above 0.5: every second averages to exactly 0.5, so the
    # per-second rule finds none; the three windows cover seconds 20..25.
    (RuleConfig(strategy="mean_thresholded"), {20: 0.9, 22: 0.9, 24: 0.9},
     [20, 21, 22, 23, 24, 25]),
    # Top 3 windows 20..22 (mean 0.47 >= 0.4), none above 0.5: seconds 20..23.
    (RuleConfig(strategy="mean_top_k", top_k=3, top_k_threshold=0.4),
     {20: 0.48, 21: 0.47, 22: 0.46}, [20, 21, 22, 23]),
])
def test_window_strategies_predict_the_seconds_of_their_deciding_windows(
        rule_cfg: RuleConfig, scores: dict[int, float], seconds: list[int]) -> None:
    rule = LabelRule(LABELS, ("resident",), rule_cfg, 2.0, 1.0, 60.0)
    windows = [LabelledWindow(float(i), i + 2.0, _row("resident", scores.get(i, 0.1)))
               for i in range(59)]
    decided = rule.decide(windows, 0.0, 60.0, "pods-ai")
    event = make_detection_event(decided.clip, station=STATION, model={"id": "pods-ai"},
                                 detection=rule.detection, stream_key="s",
                                 labels=decided.labels)
    preds = orcahello_record(event, "", "")["predictions"]
    assert [p["startTime"] for p in preds] == seconds
    per_second = {s.start_s: s.score for s in decided.clip.seconds}
    assert [p["confidence"] for p in preds] == [pytest.approx(per_second[t]) for t in seconds]
    assert {p["label"] for p in preds} == {"resident"}
