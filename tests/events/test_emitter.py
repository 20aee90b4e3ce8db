"""Clips -> events -> sinks, including an encounter left open by a stalled stream."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from support.daemon_support import read_events

from listener.config import Config, JsonlSinkConfig, OutputsConfig, StationConfig
from listener.detection.rule import WindowScore, decide_clip
from listener.events.emitter import Emitter
from listener.events.sinks import build_sinks
from listener.metrics import Metrics


def _emitter(tmp_path: Path) -> Emitter:
    cfg = Config(station=StationConfig(id="rpi_x"),
                 outputs=OutputsConfig(jsonl=JsonlSinkConfig(path=tmp_path / "e.jsonl"),
                                       log=False))
    metrics = Metrics(CollectorRegistry(), "rpi_x")
    sinks = build_sinks(cfg.outputs, cfg.station, None, metrics)
    return Emitter(cfg.station, cfg.detection, {"id": "m"}, sinks, metrics)


def _clip(utc: datetime, detected: bool = True):  # type: ignore[no-untyped-def]
    score = 1.0 if detected else 0.0
    windows = [WindowScore(i, i + 2, score, utc + timedelta(seconds=i)) for i in range(59)]
    return decide_clip(windows, 0.0, 60.0, Config(station=StationConfig(id="x")).detection)


def test_a_stalled_stream_ends_the_open_encounter(tmp_path: Path) -> None:
    emitter = _emitter(tmp_path)
    now = time.time()

    async def run() -> None:
        await emitter.clip(_clip(datetime.fromtimestamp(now - 700, UTC)), "rpi_x/hls/1")
        await emitter.expire(now, slack_s=120)  # a clip just arrived: nothing ends
        assert emitter.open_encounter is not None
        assert emitter.last_clip_mono is not None
        emitter.last_clip_mono -= 400  # no clip for 400 s: the stream stalled
        await emitter.expire(now, slack_s=120)
        await emitter.close(1.0)

    asyncio.run(run())
    kinds = [e["kind"] for e in read_events(tmp_path / "e.jsonl")]
    assert kinds == ["detection", "encounter_start", "encounter_end"]
    assert emitter.open_encounter is None


def test_a_flowing_stream_is_not_cut_short(tmp_path: Path) -> None:
    emitter = _emitter(tmp_path)
    now = time.time()

    async def run() -> None:
        await emitter.clip(_clip(datetime.fromtimestamp(now - 160, UTC)), "k")
        assert emitter.last_clip_mono is not None
        emitter.last_clip_mono -= 400
        await emitter.expire(now, slack_s=120)  # its end is only 100 s ago (< gap + slack)
        await emitter.close(1.0)

    asyncio.run(run())
    assert emitter.open_encounter is not None
    assert "encounter_end" not in [e["kind"] for e in read_events(tmp_path / "e.jsonl")]


def test_the_last_clip_confidence_gauge_is_a_ratio(tmp_path: Path) -> None:
    # Windows scoring 0.9: the record says 90 (OrcaHello's 0..100), the gauge 0.9
    # (documented 0..1 and graphed as a percentage).
    registry = CollectorRegistry()
    cfg = Config(station=StationConfig(id="rpi_x"), outputs=OutputsConfig(log=False))
    emitter = Emitter(cfg.station, cfg.detection, {"id": "m"}, [], Metrics(registry, "rpi_x"))
    utc = datetime(2024, 1, 1, tzinfo=UTC)
    windows = [WindowScore(i, i + 2, 0.9, utc + timedelta(seconds=i)) for i in range(59)]
    clip = decide_clip(windows, 0.0, 60.0, cfg.detection)
    assert clip.confidence == pytest.approx(90.0)
    asyncio.run(emitter.clip(clip, "k"))
    value = registry.get_sample_value("listener_detect_last_clip_confidence",
                                      {"station": "rpi_x"})
    assert value == pytest.approx(0.9)
