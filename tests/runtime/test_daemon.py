"""The live daemon against a real loopback HLS server publishing real MPEG-TS/AAC.

A model fake that reacts to a 1 kHz tone proves detections fire at the right
UTC time and never on quiet audio; restarts resume without gap or duplicate.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import torch
from prometheus_client.parser import text_string_to_metric_families
from safetensors.torch import save_file
from support.daemon_support import (
    ToneScorer,
    publish_in_background,
    read_events,
    run_daemon_until,
    station_config,
    tone_recording,
    ts_segments,
)
from support.hls_server import LiveHlsServer

from listener.config import ModelConfig

NODE = "rpi_test"
FOLDER = 1_600_000_000  # 2020-09-13T12:26:40Z


@pytest.fixture(scope="module")
def tone_segments(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[bytes, float]]:
    """155 s of quiet noise with a 1 kHz tone at 75-85 s (inside the second minute)."""
    d = tmp_path_factory.mktemp("tone")
    wav = tone_recording(d / "tone.wav", 155.0, [(75.0, 85.0)])
    return ts_segments(wav, d / "hls")


def _scrape(url: str) -> dict[str, float]:
    text = requests.get(url + "/metrics", timeout=5).text
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name + "".join(f"|{k}={v}" for k, v in sorted(s.labels.items())
                                   if k != "station")
            out[key] = s.value
    return out


def _weights_trained_at(path: Path, gain_db: tuple[float, float]) -> Path:
    """A weights file whose recipe records the window levels it trained at (the fake
    scorer scores; the daemon reads the levels from the configured weights)."""
    recipe = json.dumps({"augment": {"gain_db": list(gain_db)}})
    save_file({"w": torch.zeros(1)}, str(path), metadata={"recipe": recipe})
    return path


def test_tone_detected_at_the_right_utc_and_never_on_quiet_audio(
        tmp_path: Path, tone_segments: list[tuple[bytes, float]],
        caplog: pytest.LogCaptureFixture) -> None:
    with LiveHlsServer() as server:
        server.start_folder(NODE, FOLDER)
        for data, dur in tone_segments[:3]:
            server.publish(NODE, data, dur)
        rest = iter(tone_segments[3:])

        def publish() -> bool:
            nxt = next(rest, None)
            if nxt is None:
                return False
            server.publish(NODE, nxt[0], nxt[1])
            return True

        publish_in_background(publish, 0.2)
        # trained at -46..-16 dBFS: the -60 dBFS noise is below that, the tone inside
        weights = _weights_trained_at(tmp_path / "m.safetensors", (-20.0, 10.0))
        cfg = station_config(server.base_url, NODE, tmp_path,
                             model=ModelConfig(weights=weights, batch_size=8,
                                               max_batch_wait_s=0.05))
        seen: dict[str, object] = {}
        caplog.set_level(logging.INFO, logger="listener.audio.level")

        def probe(daemon) -> None:  # type: ignore[no-untyped-def]
            assert daemon.probes is not None
            url = daemon.probes.url
            seen["metrics"] = _scrape(url)
            seen["outside"] = daemon.pipeline.stats().level_outside
            seen["ready"] = requests.get(url + "/readyz", timeout=5).status_code
            seen["health"] = requests.get(url + "/healthz", timeout=5).status_code

        daemon = run_daemon_until(
            cfg, ToneScorer(),
            lambda d: d.pipeline.windows_scored >= 150, timeout_s=60, during=probe)

    events = read_events(tmp_path / "events.jsonl")
    detections = [e for e in events if e["kind"] == "detection"]
    assert len(detections) == 1, [e["kind"] for e in events]
    det = detections[0]
    start = datetime(2020, 9, 13, 12, 27, 40, tzinfo=UTC)  # folder + 60 s
    assert det["timestamp"] == start.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    seconds = [p["startTime"] for p in det["predictions"]]
    # the tone spans 75-85 s: positive seconds lie within 14..26 s of the clip
    assert seconds and min(seconds) >= 14 and max(seconds) <= 26
    assert len(det["clip"]["windows"]) == 59
    assert det["location"]["id"] == NODE and det["source_guid"] == NODE
    assert [e["kind"] for e in events].count("encounter_start") == 1
    # quiet minutes: clip 0 and (unfinished) clip 2 produced nothing
    assert all(e["clip"] is None or e["clip"]["start_s"] == 60.0 for e in events)

    m = seen["metrics"]
    assert isinstance(m, dict)
    assert m["listener_inference_windows_scored_total"] >= 150
    assert m["listener_detect_detections_total"] == 1
    assert m["listener_detect_clips_total"] == 2
    assert m["listener_hls_segments_fetched_total"] == len(tone_segments)
    assert m["listener_model_loaded"] == 1
    assert m["listener_audio_dropped_seconds_total|reason=gap"] == 0
    # the last 10 s were the recording's white noise (RMS 0.001, -60 dBFS), less what the
    # AAC encoder's low-pass takes (about 5 dB of it); the tone (-13.5 dBFS) ended a minute
    # before
    assert -68.0 < m["listener_audio_level_dbfs"] < -60.0, m["listener_audio_level_dbfs"]
    # ... which is below the levels the model trained at: exported, logged once, in the status
    model = cfg.model.model_id
    assert m[f"listener_model_trained_level_dbfs|bound=low|model={model}"] == pytest.approx(-46.02,
                                                                                         abs=0.01)
    assert m[f"listener_model_trained_level_dbfs|bound=high|model={model}"] == pytest.approx(
        -16.02, abs=0.01)
    assert [(r.model, side) for r, side in seen["outside"]] == [(model, "below")]  # type: ignore
    said = [r.getMessage() for r in caplog.records if r.name == "listener.audio.level"]
    assert len(said) == 1 and f"stayed below the levels model {model} trained at" in said[0]
    assert seen["ready"] == 200 and seen["health"] == 200
    assert daemon.pipeline is not None and daemon.pipeline.segments_fed == len(tone_segments)


def test_restart_resumes_without_gap_or_duplicate(
        tmp_path: Path, tone_segments: list[tuple[bytes, float]]) -> None:
    with LiveHlsServer() as server:
        server.start_folder(NODE, FOLDER)
        for data, dur in tone_segments[:9]:  # 0..~90 s
            server.publish(NODE, data, dur)
        cfg = station_config(server.base_url, NODE, tmp_path)
        first = run_daemon_until(cfg, ToneScorer(),
                                 lambda d: d.pipeline.windows_scored >= 88, timeout_s=60)
        assert first.pipeline is not None
        assert first.station is not None
        state = first.station.resume_store.load()
        assert state is not None and state.clip_end_s == 60.0
        assert not [e for e in read_events(tmp_path / "events.jsonl")
                    if e["kind"] == "detection"]

        fetched_before = server.count(f"/{NODE}/hls/{FOLDER}/live005.ts")
        for data, dur in tone_segments[9:]:
            server.publish(NODE, data, dur)
        second = run_daemon_until(cfg, ToneScorer(),
                                  lambda d: d.emitter is not None and d.emitter.events_emitted > 0
                                  and d.pipeline.windows_scored >= 80, timeout_s=60)
        assert second.pipeline is not None
        # it re-read from the segment before the one holding 60 s (warm-up), not from 0
        assert server.count(f"/{NODE}/hls/{FOLDER}/live000.ts") == 1
        assert server.count(f"/{NODE}/hls/{FOLDER}/live005.ts") == fetched_before + 1

    events = read_events(tmp_path / "events.jsonl")
    detections = [e for e in events if e["kind"] == "detection"]
    assert len(detections) == 1
    assert detections[0]["clip"]["start_s"] == 60.0
    assert len(detections[0]["clip"]["windows"]) == 59  # no gap: every window of the minute


def test_lost_segment_is_a_recorded_gap(
        tmp_path: Path, tone_segments: list[tuple[bytes, float]]) -> None:
    with LiveHlsServer() as server:
        server.start_folder(NODE, FOLDER)
        for i, (data, dur) in enumerate(tone_segments[:10]):
            server.publish(NODE, None if i == 4 else data, dur)  # live004.ts never appears
        cfg = station_config(server.base_url, NODE, tmp_path)

        seen: dict[str, dict[str, float]] = {}

        def probe(daemon) -> None:  # type: ignore[no-untyped-def]
            seen["m"] = _scrape(daemon.probes.url)

        run_daemon_until(cfg, ToneScorer(), lambda d: d.pipeline.windows_scored >= 80,
                         timeout_s=60, during=probe)
    m = seen["m"]
    assert m["listener_hls_gaps_total"] == 1
    assert m["listener_hls_segments_failed_total"] == 1
    assert m["listener_audio_dropped_seconds_total|reason=gap"] == pytest.approx(10.0, abs=0.1)
    assert m["listener_audio_decoder_restarts_total|reason=gap"] == 1


def test_node_restart_is_followed_into_the_new_folder(
        tmp_path: Path, tone_segments: list[tuple[bytes, float]]) -> None:
    with LiveHlsServer() as server:
        server.start_folder(NODE, FOLDER)
        for data, dur in tone_segments[:4]:
            server.publish(NODE, data, dur)
        later = FOLDER + 3600
        state: dict[str, int] = {"i": 0}

        def publish() -> bool:
            if state["i"] == 0:
                if not server.count(f"/{NODE}/hls/{FOLDER}/live003.ts"):
                    return True  # restart only once the daemon follows the old folder
                server.end_folder(NODE)
                server.start_folder(NODE, later)
            if state["i"] >= 8:
                return False
            data, dur = tone_segments[4 + state["i"]]
            server.publish(NODE, data, dur)
            state["i"] += 1
            return True

        publish_in_background(publish, 0.3)
        cfg = station_config(server.base_url, NODE, tmp_path)
        daemon = run_daemon_until(cfg, ToneScorer(), lambda d: d.pipeline.segments_fed >= 12,
                                  timeout_s=60)
    assert daemon.pipeline is not None
    assert daemon.pipeline.segments_fed == 12
    # the new folder's audio is timestamped from its own folder time
    utc = daemon.pipeline.last_scored_utc
    assert utc is not None
    assert utc > datetime.fromtimestamp(later, UTC) + timedelta(seconds=30)


def test_generic_hls_takes_utc_from_program_date_time_and_ends_at_endlist(
        tmp_path: Path, tone_segments: list[tuple[bytes, float]]) -> None:
    from listener.config import StreamConfig

    pdt0 = datetime(2021, 6, 1, 8, 0, 0, tzinfo=UTC)
    with LiveHlsServer() as server:
        stream = server.add_stream("/live/index.m3u8", window=4, media_sequence=100,
                                   program_date_time=pdt0)
        for data, dur in tone_segments[:2]:
            stream.publish(data, dur)
        rest = iter(tone_segments[2:])

        def publish() -> bool:
            nxt = next(rest, None)
            if nxt is None:
                stream.finish()
                return False
            stream.publish(nxt[0], nxt[1])
            return True

        publish_in_background(publish, 0.25)
        base = station_config(server.base_url, NODE, tmp_path)
        assert base.stream is not None
        cfg = base.model_copy(update={"stream": StreamConfig(
            kind="hls", url=server.url("/live/index.m3u8"), poll_interval_s=0.1,
            start_segments_back=10, fetch=base.stream.fetch)})
        daemon = run_daemon_until(cfg, ToneScorer(), lambda d: False, timeout_s=60)
    assert daemon.pipeline is not None
    assert daemon.pipeline.segments_fed == len(tone_segments)  # none fell out of the window
    events = read_events(tmp_path / "events.jsonl")
    detections = [e for e in events if e["kind"] == "detection"]
    assert [d["timestamp"] for d in detections] == ["2021-06-01T08:01:00.000Z"]
    # ENDLIST ended the run by itself, deciding the last, shorter clip too
    clips = daemon.registry.get_sample_value("listener_detect_clips_total", {"station": NODE})
    assert clips == 3
