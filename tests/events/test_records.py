"""Event ids and the records built from events (OrcaHello's format, the JSONL form)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from listener.config import DetectionConfig, StationConfig
from listener.detection.rule import ClipResult, EncounterTracker, WindowScore, decide_clip
from listener.events.records import (
    Event,
    clip_file_names,
    event_json,
    iso_utc,
    make_detection_event,
    make_encounter_event,
    orcahello_record,
)

CFG = DetectionConfig()
STATION = StationConfig(id="rpi_orcasound_lab", name="Orcasound Lab",
                        longitude=-123.1735774, latitude=48.5583362)
MODEL = {"id": "orcahello-srkw", "architecture": "resnet50", "sha256": "ab" * 32}
T0 = datetime(2024, 7, 1, 12, 30, 0, tzinfo=UTC)
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def make_clip(start_s: float = 120.0, hot: range = range(10, 14), score: float = 0.9,
              utc: datetime | None = T0) -> ClipResult:
    """A 60 s clip whose windows ``hot`` score ``score`` and the rest 0.1."""
    windows = [WindowScore(start_s + i, start_s + i + 2.0, score if i in hot else 0.1,
                           utc + timedelta(seconds=i) if utc else None) for i in range(59)]
    return decide_clip(windows, start_s, start_s + 60.0, CFG)


def detection(clip: ClipResult | None = None, **kw: object) -> Event:
    return make_detection_event(clip or make_clip(), station=STATION, model=MODEL,
                                detection=CFG, stream_key="rpi_orcasound_lab/hls/1719836400",
                                **kw)  # type: ignore[arg-type]


def test_orcahello_record_has_exactly_the_moderator_fields() -> None:
    event = detection()
    rec = orcahello_record(event, "https://a.example/audio", "https://a.example/img/")
    assert set(rec) == {"id", "modelId", "audioUri", "imageUri", "reviewed", "timestamp",
                        "whaleFoundConfidence", "location", "source_guid", "predictions"}
    assert uuid.UUID(rec["id"]) and rec["id"] == event.id
    assert rec["modelId"] == "orcahello-srkw"
    assert rec["reviewed"] is False
    assert rec["timestamp"] == "2024-07-01T12:30:00.000Z"
    assert rec["location"] == {"id": "rpi_orcasound_lab", "name": "Orcasound Lab",
                               "longitude": -123.1735774, "latitude": 48.5583362}
    assert rec["source_guid"] == "rpi_orcasound_lab"
    audio, image = clip_file_names(event, "flac", clip_only=True)
    assert rec["audioUri"] == f"https://a.example/audio/{audio}"
    assert rec["imageUri"] == f"https://a.example/img/{image}"
    # windows 10..13 at 0.9: s_10 = (0.1+0.9)/2 = 0.5 (not > 0.5), s_11..s_13 = 0.9,
    # s_14 = 0.5 -> three positive seconds, confidence 90.
    assert [p["startTime"] for p in rec["predictions"]] == [11.0, 12.0, 13.0]
    assert [p["id"] for p in rec["predictions"]] == [0, 1, 2]
    assert all(p["duration"] == 1.0 for p in rec["predictions"])
    assert [p["confidence"] for p in rec["predictions"]] == pytest.approx([0.9] * 3)
    assert rec["whaleFoundConfidence"] == pytest.approx(90.0)
    assert 0 <= rec["whaleFoundConfidence"] <= 100
    json.dumps(rec, allow_nan=False)


def test_ids_are_deterministic_and_distinguish_kind_clip_and_model() -> None:
    clip = make_clip()
    a, b = detection(clip), detection(clip, created_utc=T0 + timedelta(hours=1))
    assert a.id == b.id  # a redelivery after a restart carries the same id
    assert detection(make_clip(start_s=180.0, utc=T0 + timedelta(minutes=1))).id != a.id
    other_model = make_detection_event(clip, station=STATION, model={**MODEL, "id": "v2"},
                                       detection=CFG, stream_key="x")
    assert other_model.id != a.id
    tracker = EncounterTracker(CFG.encounter_gap_s)
    (start,) = tracker.observe(clip, "enc-1")
    enc_event = make_encounter_event(start, station=STATION, model=MODEL, detection=CFG,
                                     stream_key="x")
    assert enc_event.kind == "encounter_start" and enc_event.id != a.id
    # Without UTC the stream key and offset identify the clip.
    n1 = detection(make_clip(utc=None))
    assert n1.id == detection(make_clip(utc=None)).id != a.id


def test_negative_clip_is_not_a_detection() -> None:
    with pytest.raises(ValueError, match="not a detection"):
        detection(make_clip(hot=range(0)))


def test_event_json_carries_audit_fields() -> None:
    doc = event_json(detection(created_utc=T0 + timedelta(seconds=65)))
    assert doc["kind"] == "detection"
    assert doc["timestamp"] == "2024-07-01T12:30:00.000Z"
    assert ISO_Z.match(doc["created_utc"])
    assert doc["station"]["id"] == "rpi_orcasound_lab"
    assert doc["model"]["sha256"] == "ab" * 32
    assert doc["thresholds"] == {"local_threshold": 0.5, "global_threshold": 3,
                                 "window_s": 2.0, "hop_s": 1.0, "clip_s": 60.0}
    clip = doc["clip"]
    assert (clip["start_s"], clip["end_s"]) == (120.0, 180.0)
    assert clip["utc_start"] == "2024-07-01T12:30:00.000Z"
    assert clip["utc_end"] == "2024-07-01T12:31:00.000Z"
    assert clip["detected"] is True
    assert len(clip["seconds"]) == 60 and len(clip["windows"]) == 59
    assert clip["windows"][11] == {"start_s": 131.0, "end_s": 133.0, "score": 0.9,
                                   "utc": "2024-07-01T12:30:11.000Z"}
    json.loads(json.dumps(doc, allow_nan=False))


def test_encounter_events_through_the_tracker() -> None:
    tracker = EncounterTracker(gap_s=120.0)
    c1 = make_clip(0.0, utc=T0)
    c2 = make_clip(60.0, hot=range(20, 40), score=0.95, utc=T0 + timedelta(seconds=60))
    quiet = make_clip(400.0, hot=range(0), utc=T0 + timedelta(seconds=400))
    events = []
    # Events are made as the tracker yields them: the Encounter object is
    # mutated by later clips, and the event keeps a snapshot of it.
    for clip, new_id in ((c1, "enc-1"), (c2, "enc-2"), (quiet, "enc-3")):
        events += [make_encounter_event(e, station=STATION, model=MODEL, detection=CFG,
                                        stream_key="k") for e in tracker.observe(clip, new_id)]
    assert [e.kind for e in events] == ["encounter_start", "encounter_update", "encounter_end"]
    assert events[0].encounter is not None and events[0].encounter["clip_count"] == 1
    end = events[2]
    assert end.kind == "encounter_end" and end.clip is None and end.encounter_id == "enc-1"
    assert end.encounter is not None
    assert end.encounter["clip_count"] == 2
    assert end.encounter["utc_start"] == "2024-07-01T12:30:00.000Z"
    assert end.encounter["utc_end"] == "2024-07-01T12:32:00.000Z"
    assert end.encounter["peak_confidence"] == pytest.approx(c2.confidence)
    assert c2.confidence > c1.confidence
    doc = event_json(end)
    assert doc["audioUri"] is None and doc["predictions"] == [] and doc["clip"] is None
    assert doc["timestamp"] == "2024-07-01T12:30:00.000Z"
    assert len({e.id for e in events}) == 3
    with pytest.raises(ValueError, match="has no clip"):
        orcahello_record(end, "", "")


def test_iso_utc_normalises_zones_and_naive_times() -> None:
    plus2 = datetime(2024, 7, 1, 14, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert iso_utc(plus2) == "2024-07-01T12:30:00.123Z"
    assert iso_utc(datetime(2024, 7, 1, 12, 0)) == "2024-07-01T12:00:00.000Z"
    assert iso_utc(None) is None


def test_clip_file_names_follow_the_event() -> None:
    event = detection()
    audio, image = clip_file_names(event, "wav")
    assert audio == f"rpi_orcasound_lab_20240701T123000Z_{event.id[:8]}.wav"
    assert image == audio[:-4] + ".png"
    assert clip_file_names(event, "wav", clip_only=True) == (
        audio[:-4] + ".clip.wav", audio[:-4] + ".clip.png")
    with pytest.raises(ValueError, match="'mp3'"):
        clip_file_names(event, "mp3")
