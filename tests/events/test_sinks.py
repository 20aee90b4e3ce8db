"""The JSON-lines, OrcaHello and log sinks and build_sinks/emit_all against real files."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from support.sink_events import STATION, make_event

from listener.config import (
    ClipSinkConfig,
    JsonlSinkConfig,
    OrcaHelloSinkConfig,
    OutputsConfig,
    WebhookSinkConfig,
)
from listener.errors import SinkError
from listener.events.records import Event, clip_file_names, event_json
from listener.events.sinks import JsonlSink, LogSink, OrcaHelloSink, build_sinks, emit_all
from listener.events.sinks.jsonl import read_records
from listener.metrics import Metrics

# --- jsonl ---------------------------------------------------------------------

def test_jsonl_appends_and_survives_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "events.jsonl"
    events = [make_event(i) for i in range(3)]

    async def run(sink: JsonlSink, evs: list[Event]) -> None:
        for ev in evs:
            await sink.emit(ev)
        await sink.close(1.0)

    asyncio.run(run(JsonlSink(JsonlSinkConfig(path=path)), events[:2]))
    before = path.read_bytes()
    with open(path, "ab") as fh:  # a crash in the middle of a write
        fh.write(b'{"id": "torn-rec')
    asyncio.run(run(JsonlSink(JsonlSinkConfig(path=path)), events[2:]))
    raw = path.read_bytes()
    assert raw.startswith(before)  # never rewritten
    assert raw.count(b"\n") == 4 and raw.endswith(b"\n")
    records = list(read_records(path))
    assert [r["id"] for r in records] == [e.id for e in events]
    assert records[0] == json.loads(json.dumps(event_json(events[0])))


# --- orcahello -----------------------------------------------------------------

def test_orcahello_sink_writes_one_record_per_detection(tmp_path: Path) -> None:
    cfg = OrcaHelloSinkConfig(dir=tmp_path / "oh", audio_base_uri="https://x.example/a/",
                              image_base_uri="https://x.example/i")
    event = make_event()
    asyncio.run(OrcaHelloSink(cfg, audio_format="wav").emit(event))
    (path,) = (tmp_path / "oh").iterdir()
    assert path.name == f"{event.id}.json"
    doc = json.loads(path.read_text())
    audio, image = clip_file_names(event, "wav", clip_only=True)
    assert doc["audioUri"] == f"https://x.example/a/{audio}"
    assert doc["imageUri"] == f"https://x.example/i/{image}"
    assert doc["timestamp"] == "2024-07-01T12:00:00.000Z"
    assert doc["source_guid"] == "rpi_bush_point" and doc["reviewed"] is False
    assert [p["startTime"] for p in doc["predictions"]] == [11.0, 12.0, 13.0]


# --- log, build_sinks, emit_all --------------------------------------------------

def test_log_sink_line(caplog: pytest.LogCaptureFixture) -> None:
    event = make_event()
    with caplog.at_level(logging.INFO, logger="listener.events.sinks.log"):
        asyncio.run(LogSink().emit(event))
    (rec,) = caplog.records
    msg = rec.getMessage()
    assert msg.startswith("rpi_bush_point detection utc=2024-07-01T12:00:00.000Z")
    assert "confidence=90.0" in msg and "positive_s=[11,12,13]" in msg
    assert rec.station == "rpi_bush_point"  # type: ignore[attr-defined]


def test_build_sinks_and_emit_all_count_failures(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, "rpi_bush_point")
    outputs = OutputsConfig(jsonl=JsonlSinkConfig(path=tmp_path),  # a folder: cannot append
                            orcahello=OrcaHelloSinkConfig(dir=tmp_path / "oh"), log=True)
    sinks = build_sinks(outputs, STATION, None, metrics.sink_metrics)
    assert [s.name for s in sinks] == ["jsonl", "orcahello", "log"]

    def value(name: str, sink: str) -> float | None:
        return registry.get_sample_value(name, {"station": "rpi_bush_point", "sink": sink})

    with caplog.at_level(logging.WARNING, logger="listener.events.sinks.base"):
        failed = asyncio.run(emit_all(sinks, make_event(), metrics.sink_metrics))
    assert failed == 1
    assert "sink jsonl failed" in caplog.text
    assert value("listener_sink_failures_total", "jsonl") == 1
    assert value("listener_sink_deliveries_total", "orcahello") == 1
    assert value("listener_sink_deliveries_total", "log") == 1
    with pytest.raises(SinkError, match="outbox_dir"):
        build_sinks(OutputsConfig(webhook=WebhookSinkConfig(url="http://127.0.0.1:9/")),
                    STATION, None)
    with pytest.raises(SinkError, match="history"):
        build_sinks(OutputsConfig(clips=ClipSinkConfig(dir=tmp_path)), STATION, None)
