"""A live station with two models against the loopback HLS server.

The primary (the tone fake behind the ResNet's interface) alerts; the shadow
(the same detector behind the backend interface, its own 2 s/1 s windows) is
scored on the same decoded audio and recorded, but never reaches the webhook,
OrcaHello records or the log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support.daemon_support import (
    ToneBackend,
    ToneScorer,
    read_events,
    run_daemon_until,
    station_config,
    tone_recording,
    ts_segments,
)
from support.hls_server import LiveHlsServer

from listener.audio import decode
from listener.config import (
    JsonlSinkConfig,
    ModelEntry,
    OrcaHelloSinkConfig,
    OutputsConfig,
    WebhookSinkConfig,
)
from listener.runtime.daemon import Daemon

NODE = "rpi_two"
FOLDER = 1_600_000_000


@pytest.fixture(scope="module")
def segments(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[bytes, float]]:
    """125 s of quiet noise with a 1 kHz tone at 75-85 s (in the second minute)."""
    d = tmp_path_factory.mktemp("two")
    return ts_segments(tone_recording(d / "tone.wav", 125.0, [(75.0, 85.0)]), d / "hls")


@pytest.fixture()
def webhook() -> Iterator[tuple[str, list[dict]]]:
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    server.shutdown()


@pytest.mark.slow
def test_two_models_share_the_decoded_audio_and_the_shadow_never_alerts(
        tmp_path: Path, segments: list[tuple[bytes, float]],
        webhook: tuple[str, list[dict]], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    starts: list[str] = []
    real_init = decode.StreamDecoder.__init__

    def counting_init(self, name, *args, **kwargs):  # type: ignore[no-untyped-def]
        starts.append(name)
        real_init(self, name, *args, **kwargs)

    monkeypatch.setattr(decode.StreamDecoder, "__init__", counting_init)
    url, posted = webhook
    outputs = OutputsConfig(jsonl=JsonlSinkConfig(path=tmp_path / "events.jsonl"),
                            orcahello=OrcaHelloSinkConfig(dir=tmp_path / "orcahello"),
                            webhook=WebhookSinkConfig(url=url, backoff_initial_s=0.05),
                            log=True)
    shadow = ToneBackend()
    with LiveHlsServer() as server:
        cfg = station_config(server.base_url, NODE, tmp_path, outputs=outputs, models=(
            ModelEntry(id="resnet-live", batch_size=8, max_batch_wait_s=0.05),
            ModelEntry(id="tone-shadow", role="shadow", batch_size=8, max_batch_wait_s=0.05,
                       window_s=2.0, hop_s=1.0)))
        server.start_folder(NODE, FOLDER)
        for data, dur in segments:
            server.publish(NODE, data, dur)
        caplog.set_level(logging.INFO)
        daemon = run_daemon_until(
            cfg, ToneScorer(), lambda d: _both_decided(d, 2), timeout_s=60,
            backends={"tone-shadow": shadow})

    assert len(starts) == 1, starts  # one ffmpeg for both models
    events = read_events(tmp_path / "events.jsonl")
    dets = [e for e in events if e["kind"] == "detection"]
    by_model = {e["model"]["id"]: e for e in dets}
    assert set(by_model) == {"resnet-live", "tone-shadow"}, [e["model"]["id"] for e in dets]
    assert by_model["tone-shadow"]["model"]["role"] == "shadow"
    assert by_model["resnet-live"]["model"]["role"] == "primary"
    assert by_model["tone-shadow"]["timestamp"] == by_model["resnet-live"]["timestamp"]
    assert by_model["tone-shadow"]["globalPredictionLabel"] == "call"
    assert len(by_model["tone-shadow"]["clip"]["windows"]) == 59  # 2 s every 1 s over 60 s
    assert shadow.windows >= 118
    # The shadow reached the JSON lines only.
    records = [json.loads(p.read_text()) for p in (tmp_path / "orcahello").rglob("*.json")]
    assert records and {r["modelId"] for r in records} == {"resnet-live"}
    detections_posted = [p for p in posted if p.get("kind") == "detection"]
    assert detections_posted and {p["model"]["id"] for p in detections_posted} == {
        "resnet-live"}
    assert not [r for r in caplog.records if r.name.startswith("listener.events.sinks.log")
                and "tone-shadow" in r.getMessage()]
    # Both models decided clips 0 and 1; they agree on both.
    agreement = [json.loads(line) for line in
                 (tmp_path / "events.agreement.jsonl").read_text().splitlines()]
    assert [(a["start_s"], a["fired"]) for a in agreement[:2]] == [
        (0.0, []), (60.0, ["resnet-live", "tone-shadow"])]
    get = daemon.registry.get_sample_value
    pair = {"station": NODE, "model_a": "resnet-live", "model_b": "tone-shadow"}
    assert get("listener_detect_agreement_total", {**pair, "outcome": "both"}) == 1
    assert get("listener_detect_agreement_total", {**pair, "outcome": "neither"}) == 1
    assert get("listener_detect_model_detections_total",
               {"station": NODE, "model": "tone-shadow", "role": "shadow"}) == 1
    assert get("listener_detect_detections_total", {"station": NODE}) == 1


def _both_decided(daemon: Daemon, clips: int) -> bool:
    station = daemon.station
    return (station is not None and station.agreement is not None
            and len(station.agreement.records) >= clips)


def test_each_model_s_open_encounter_is_saved_and_continued_after_a_restart(
        tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from listener.metrics import Metrics
    from listener.model.backends.check import plan_station
    from listener.pipeline.contracts import ClipProgress
    from listener.runtime.builder import LANE_ENCOUNTERS, LANE_PROGRESS, build_station
    from listener.runtime.models import ModelRegistry
    from listener.runtime.resume import StateStore, StreamState

    def encounter(eid: str) -> dict[str, object]:
        return {"id": eid, "start_t": 60.0, "end_t": 120.0, "start_utc": None,
                "end_utc": None, "clip_count": 1, "peak_confidence": 80.0}

    cfg = station_config("http://127.0.0.1:9", NODE, tmp_path, models=(
        ModelEntry(id="resnet-live"),
        ModelEntry(id="tone-shadow", role="shadow", window_s=2.0, hop_s=1.0)))
    store = StateStore(cfg.state.dir, NODE)
    key = f"{NODE}/hls/{FOLDER}"
    store.save(StreamState(key, 10, 120.0, encounter("primary-enc"),
                           {LANE_ENCOUNTERS: {"tone-shadow": encounter("shadow-enc")}}))

    last_pipeline: list[Any] = []

    def build() -> tuple[str | None, str | None, object]:
        plan = plan_station(cfg)
        registry = ModelRegistry(scorer=ToneScorer(), backends={"tone-shadow": ToneBackend()})
        models = asyncio.run(registry.models_for(plan.cfg, plan.models))
        station = build_station(plan.cfg, models, Metrics(CollectorRegistry(), NODE),
                                pool=concurrent.futures.ThreadPoolExecutor(1))
        last_pipeline[:] = [station.pipeline]
        (lane,) = station.lane_emitters
        primary, shadow = station.emitter.open_encounter, lane.open_encounter
        return (primary.id if primary else None, shadow.id if shadow else None,
                station.pipeline.on_progress)

    # Continued after the restart, and saved again with the next clip's progress.
    primary, shadow, on_progress = build()
    assert (primary, shadow) == ("primary-enc", "shadow-enc")
    assert callable(on_progress)
    on_progress(ClipProgress(key, 16, 180.0, {"resnet-live": 240.0, "tone-shadow": 180.0}))
    saved = json.loads(store.path.read_text())
    assert saved["clip_end_s"] == 180.0
    assert saved["extra"][LANE_ENCOUNTERS]["tone-shadow"]["id"] == "shadow-enc"
    # Each model resumes after its own last durable clip: the primary emits no clip twice.
    assert saved["extra"][LANE_PROGRESS] == {"resnet-live": 240.0, "tone-shadow": 180.0}
    assert build()[:2] == ("primary-enc", "shadow-enc")
    skips = {lane.id: lane.skip_before for lane in last_pipeline[0].lanes}
    assert skips == {"resnet-live": {key: 240.0}, "tone-shadow": {key: 180.0}}
    # A saved encounter of no use is ignored with a warning, not a failure.
    store.save(StreamState(key, 16, 180.0, None, {LANE_ENCOUNTERS: ["not", "a", "map"]}))
    assert build()[:2] == (None, None)


def test_other_models_load_off_the_event_loop(
        tmp_path: Path, segments: list[tuple[bytes, float]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A transformers model takes seconds to load: /healthz keeps answering meanwhile."""
    import socket
    import time

    import requests

    from listener.config import MetricsConfig
    from listener.model import backends

    loaded_in: list[str] = []
    loading = threading.Event()

    def slow_load(plan, frontend_cfg=None, **kwargs):  # type: ignore[no-untyped-def]
        loaded_in.append(threading.current_thread().name)
        loading.set()
        time.sleep(2.0)
        return ToneBackend(plan.id)

    monkeypatch.setattr(backends, "load_backend", slow_load)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    waits: list[float] = []

    def ask() -> None:  # /healthz every 0.15 s while the shadow loads
        loading.wait(30)
        for _ in range(10):
            started = time.monotonic()
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            waits.append(time.monotonic() - started)
            time.sleep(0.15)

    with LiveHlsServer() as server:
        cfg = station_config(server.base_url, NODE, tmp_path,
                             metrics=MetricsConfig(host="127.0.0.1", port=port), models=(
            ModelEntry(id="resnet-live", batch_size=8, max_batch_wait_s=0.05),
            ModelEntry(id="tone-shadow", role="shadow", window_s=2.0, hop_s=1.0)))
        server.start_folder(NODE, FOLDER)
        for data, dur in segments[:2]:
            server.publish(NODE, data, dur)
        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        daemon = run_daemon_until(cfg, ToneScorer(), lambda d: len(waits) >= 10, timeout_s=30)
        asker.join(5)
    assert loaded_in and loaded_in[0] != threading.main_thread().name
    assert len(waits) >= 10 and max(waits) < 1.0, waits
    assert daemon.station is not None and len(daemon.station.lane_emitters) == 1
