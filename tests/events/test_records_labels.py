"""OrcaHello's multi-class record fields: globalPredictionLabel, predictions[].label, comments."""

from __future__ import annotations

import re
from datetime import UTC, datetime

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
