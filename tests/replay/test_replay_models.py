"""``listener replay`` of a station with two models: the tone fake as primary and a
tiny real ``transformers`` audio classifier (random weights, saved in the test)
as shadow, against the loopback S3 bucket."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.bucket_server import BucketServer
from support.daemon_support import ToneScorer, read_events, station_config, tone_recording
from support.daemon_support import ts_segments as make_segments
from support.tiny_models import PODS_LABELS, save_tiny_audio_classifier

from listener.config import ModelEntry
from listener.replay.runner import Replay

pytest.importorskip("transformers")

NODE = "rpi_two"
A = 1_600_000_000


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@pytest.mark.slow
def test_replay_scores_the_shadow_on_its_own_grid_and_records_it_apart(
        tmp_path: Path) -> None:
    segs = make_segments(tone_recording(tmp_path / "t.wav", 125.0, [(75.0, 85.0)]),
                         tmp_path / "hls")
    folder = save_tiny_audio_classifier(tmp_path / "pods")
    models = (ModelEntry(id="resnet-live", batch_size=8, max_batch_wait_s=0.05),
              # Every label a target: the shadow's target score is 1, so it fires
              # on every clip whatever its random weights say.
              ModelEntry(id="pods", backend="transformers", weights=folder, role="shadow",
                         target_labels=PODS_LABELS, batch_size=8))
    with BucketServer() as bucket:
        bucket.add_folder(NODE, A, [(f"live{i:03d}.ts", d, b) for i, (b, d) in enumerate(segs)])
        cfg = station_config(bucket.base_url, NODE, tmp_path, models=models)
        summary = asyncio.run(Replay(cfg, at(A), at(A + 120), out_dir=tmp_path / "out",
                                     scorer=ToneScorer(), concurrency=1).run())
    assert summary.status == "complete"
    events = read_events(tmp_path / "out" / "events.jsonl")
    dets = [e for e in events if e["kind"] == "detection"]
    shadow = [e for e in dets if e["model"]["id"] == "pods"]
    primary = [e for e in dets if e["model"]["id"] == "resnet-live"]
    assert [e["timestamp"] for e in primary] == ["2020-09-13T12:27:40.000Z"]
    assert [e["timestamp"] for e in shadow] == ["2020-09-13T12:26:40.000Z",
                                                "2020-09-13T12:27:40.000Z"]
    assert all(e["model"]["role"] == "shadow" for e in shadow)
    # 3 s windows every 2 s at 16 kHz: 29 windows fit in a 60 s clip.
    assert {len(e["clip"]["windows"]) for e in shadow} == {29}
    assert {e["globalPredictionLabel"] for e in shadow} <= set(PODS_LABELS)
    assert all(e["comments"].startswith("AI: ") for e in shadow)
    assert {(d["model"], d["utc_start"]) for d in summary.detections} == {
        ("resnet-live", "2020-09-13T12:27:40.000Z"), ("pods", "2020-09-13T12:26:40.000Z"),
        ("pods", "2020-09-13T12:27:40.000Z")}
    # Each model tracks its own encounter, under its own id, and each ends with the range.
    encounters = [e for e in events if e["kind"].startswith("encounter_")]
    ids = {m: {e["encounter_id"] for e in encounters if e["model"]["id"] == m}
           for m in ("resnet-live", "pods")}
    assert all(len(v) == 1 for v in ids.values()) and ids["resnet-live"] != ids["pods"]
    assert sorted(e["model"]["id"] for e in encounters if e["kind"] == "encounter_end") == \
        ["pods", "resnet-live"]
    agreement = [json.loads(line) for line in
                 (tmp_path / "out" / "events.agreement.jsonl").read_text().splitlines()]
    assert [a["fired"] for a in agreement] == [["pods"], ["resnet-live", "pods"]]


@pytest.mark.slow
def test_sharded_replay_of_two_models_merges_each_detection_once(tmp_path: Path) -> None:
    """Two models, three parts whose boundaries fall inside detected clips: the
    merge lists every model's detections of the unsharded replay, each once, and
    each part's events file holds only the clips of its own chunk."""
    from datetime import timedelta

    from support.daemon_support import ToneBackend

    from listener.replay.shard import merge, run_parts, split

    segs = make_segments(tone_recording(tmp_path / "t.wav", 155.0, [(20.0, 32.0),
                                                                    (75.0, 85.0)]),
                         tmp_path / "hls")
    models = (ModelEntry(id="resnet-live", batch_size=8, max_batch_wait_s=0.05),
              ModelEntry(id="tone-b", role="secondary", batch_size=8, window_s=2.0,
                         hop_s=1.0))
    start, end = at(A), at(A + 150)
    with BucketServer() as bucket:
        bucket.add_folder(NODE, A, [(f"live{i:03d}.ts", d, b) for i, (b, d) in enumerate(segs)])
        whole = asyncio.run(Replay(
            station_config(bucket.base_url, NODE, tmp_path / "whole", models=models),
            start, end, out_dir=tmp_path / "whole" / "out", scorer=ToneScorer(),
            backends={"tone-b": ToneBackend("tone-b")}).run())
        config = tmp_path / "station.json"
        config.write_text(json.dumps(station_config(
            bucket.base_url, NODE, tmp_path / "parts", models=models).model_dump(mode="json")))
        parts = split([(NODE, str(config))], start, end, timedelta(seconds=50),
                      timedelta(seconds=60))
        assert run_parts(parts, tmp_path / "shards", concurrency=2, say=lambda _: None,
                         scorer=ToneScorer(), backends={"tone-b": ToneBackend("tone-b")}) == 0
    assert whole.status == "complete"
    assert {d["model"] for d in whole.detections} == {"resnet-live", "tone-b"}
    merged = merge(tmp_path / "shards")
    assert [{k: v for k, v in d.items() if k != "station"} for d in merged.detections] == \
        sorted(whole.detections, key=lambda d: (d["utc_start"], d["model"]))
    written = [e for f in (tmp_path / "shards").rglob("events.jsonl") for e in read_events(f)
               if e["kind"] == "detection"]
    assert len(written) == len(merged.detections)
