"""Several stations in one process against the loopback HLS server.

One node never comes up: the other two keep scoring, their events equal
their single-station runs, and /readyz reports each station.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from prometheus_client import CollectorRegistry
from support.daemon_support import (
    ToneScorer,
    read_events,
    run_daemon_until,
    station_config,
    tone_recording,
    ts_segments,
)
from support.hls_server import LiveHlsServer

from listener.config import Config, MetricsConfig, OutputsConfig
from listener.config.outputs import WebhookSinkConfig
from listener.runtime.builder import StationOptions
from listener.runtime.daemon import Timeouts
from listener.runtime.models import ModelRegistry
from listener.runtime.runner import Runner

FOLDER = 1_600_000_000
LIVE = ("rpi_alpha", "rpi_beta")
DEAD = "rpi_dead"


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[bytes, float]]]:
    """Two 130 s recordings with tones in different minutes (a detection each)."""
    d = tmp_path_factory.mktemp("fleet")
    return {
        LIVE[0]: ts_segments(tone_recording(d / "a.wav", 130.0, [(75.0, 85.0)]), d / "a"),
        LIVE[1]: ts_segments(tone_recording(d / "b.wav", 130.0, [(20.0, 32.0)], seed=1),
                             d / "b"),
    }


def _config(server: LiveHlsServer, node: str, workdir: Path, port: int = 0) -> Config:
    return station_config(server.base_url, node, workdir / node,
                          metrics=MetricsConfig(host="127.0.0.1", port=port))


def _comparable(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k != "created_utc"}  # when it was written
            for e in events]


def _publish(server: LiveHlsServer, recordings: dict[str, list[tuple[bytes, float]]]) -> None:
    for node, segments in recordings.items():
        server.start_folder(node, FOLDER)
        for data, dur in segments:
            server.publish(node, data, dur)


TYPO = "stations/typo.yaml:4: stream.nod: unknown key (did you mean 'node'?)"


def test_a_dead_stream_does_not_stall_the_others(
        tmp_path: Path, recordings: dict[str, list[tuple[bytes, float]]]) -> None:
    seen: dict[str, Any] = {}
    with LiveHlsServer() as server:
        _publish(server, recordings)
        configs = [_config(server, n, tmp_path / "fleet") for n in (*LIVE, DEAD)]
        fleet = Runner(configs, models=ModelRegistry(scorer=ToneScorer()),
                       registry=CollectorRegistry(), quorum=2,
                       timeouts=Timeouts(drain_s=20, sinks_s=5, probes_s=2),
                       skipped=[(Path("stations/typo.yaml"), TYPO)])

        async def watch() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                units = [fleet.unit(n) for n in LIVE]
                if all(u.station and u.station.pipeline.windows_scored >= 128
                       for u in units):
                    break
            assert fleet.probes is not None
            r = await asyncio.to_thread(requests.get, fleet.probes.url + "/readyz",
                                        timeout=5)
            seen["ready"] = (r.status_code, r.headers["Content-Type"], r.json())
            s = await asyncio.to_thread(requests.get, fleet.probes.url + "/api/status",
                                        timeout=5)
            seen["console"] = (s.status_code, s.json())
            o = await asyncio.to_thread(requests.get, fleet.probes.url + "/api/overview",
                                        timeout=5)
            seen["overview"] = o.json()
            fleet.request_stop("test finished")

        assert _run(fleet, watch) == 0
        # each live station alone, same segments, a fresh state folder
        alone = {n: run_daemon_until(_config(server, n, tmp_path / "alone"), ToneScorer(),
                                     lambda d: d.pipeline.windows_scored >= 128, timeout_s=60)
                 for n in LIVE}
    for node in LIVE:
        together = read_events(tmp_path / "fleet" / node / "events.jsonl")
        single = read_events(tmp_path / "alone" / node / "events.jsonl")
        assert [e["kind"] for e in together].count("detection") == 1
        assert _comparable(together) == _comparable(single)
        assert alone[node].pipeline is not None
    assert not read_events(tmp_path / "fleet" / DEAD / "events.jsonl")
    # listener run and a lone daemon label their build the same way (precision too)
    info = {n: _build_info(fleet.registry, n) for n in LIVE}
    assert info == {n: _build_info(alone[n].registry, n) for n in LIVE}
    assert all(i["precision"] == "float32" and i["model_id"] for i in info.values())
    status, ctype, body = seen["ready"]
    assert status == 200 and ctype == "application/json"
    assert body["quorum"] == 2 and body["current"] == 2
    assert body["stations"][LIVE[0]]["current"] and body["stations"][LIVE[1]]["current"]
    # the console serves every station of the fleet
    console_status, console = seen["console"]
    assert console_status == 200
    assert {s["station_id"] for s in console["stations"]} == {*LIVE, DEAD}
    dead = body["stations"][DEAD]
    # The failing fetch shows where people look: /readyz and the console's status.
    assert not dead["current"]
    assert dead["reason"].startswith("waiting for the first segment; latest.txt: HTTP 404")
    assert dead["last_error"]["active"] and "HTTP 404" in dead["last_error"]["message"]
    assert body["stations"][LIVE[0]]["last_error"] is None
    dead_status = next(s for s in console["stations"] if s["station_id"] == DEAD)
    # Running with nothing received is not "not running" on the coverage bar.
    assert isinstance(dead_status["running_since"], float)
    assert dead_status["last_error"]["text"].startswith("latest.txt: HTTP 404")
    # A config file --keep-going left out is listed on the overview, not only logged.
    assert seen["overview"]["skipped"] == [{"file": "stations/typo.yaml", "error": TYPO}]


def test_stations_configured_alike_share_one_copy_of_another_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each station's shadow model configured alike is loaded once for the fleet."""
    from support.daemon_support import ToneBackend

    from listener.config import ModelEntry
    from listener.model import backends

    loads: list[str] = []

    def load(plan, frontend_cfg=None, **kwargs):  # type: ignore[no-untyped-def]
        loads.append(plan.id)
        return ToneBackend(plan.id)

    monkeypatch.setattr(backends, "load_backend", load)
    models = (ModelEntry(id="resnet-live", batch_size=8, max_batch_wait_s=0.05),
              ModelEntry(id="tone-shadow", role="shadow", window_s=2.0, hop_s=1.0))
    with LiveHlsServer() as server:
        configs = [station_config(server.base_url, node, tmp_path / node, models=models,
                                  metrics=MetricsConfig(host="127.0.0.1", port=0))
                   for node in LIVE]
        fleet = Runner(configs, models=ModelRegistry(scorer=ToneScorer()),
                       registry=CollectorRegistry(),
                      timeouts=Timeouts(drain_s=5, sinks_s=2, probes_s=2))

        async def stop_when_built() -> None:
            while not all(u.station is not None for u in fleet.units):
                await asyncio.sleep(0.05)
            fleet.request_stop("built")

        assert _run(fleet, stop_when_built) == 0
    assert loads == ["tone-shadow"]
    first, second = (u.models[1] for u in fleet.units)
    # one load, one batcher, a lane per station
    assert first.batcher is second.batcher and first.prepare is second.prepare


def test_stations_sharing_a_model_keep_their_own_detection(tmp_path: Path) -> None:
    """One `model:` section, two `detection:` sections: one loaded copy, but each
    station decides with its own windows and thresholds, and windows of another
    length are batched apart (a batch is one array) and scored."""
    from dataclasses import dataclass

    import numpy as np

    from listener.config import DetectionConfig, StationConfig
    from listener.model.backends.check import plan_models

    a = station_config("http://127.0.0.1:9", "rpi_a", tmp_path / "a")
    b = station_config("http://127.0.0.1:9", "rpi_b", tmp_path / "b").model_copy(update={
        "station": StationConfig(id="rpi_b", name="B", longitude=0, latitude=0),
        "detection": DetectionConfig(window_s=3.0, hop_s=1.0, local_threshold=0.9,
                                     global_threshold=10)})
    c = station_config("http://127.0.0.1:9", "rpi_c", tmp_path / "c").model_copy(update={
        "detection": DetectionConfig(local_threshold=0.7)})

    @dataclass(frozen=True)
    class Waved:
        wave: np.ndarray

    async def main() -> None:
        registry = ModelRegistry(scorer=ToneScorer())
        got = {cfg.station.id: (await registry.models_for(cfg, plan_models(cfg)))[0]
               for cfg in (a, b, c)}
        try:
            for cfg in (a, b, c):
                assert got[cfg.station.id].plan == plan_models(cfg)[0]
            assert got["rpi_b"].plan.rule.global_threshold == 10
            assert got["rpi_a"].prepare is got["rpi_b"].prepare
            assert got["rpi_a"].batcher is got["rpi_c"].batcher
            assert got["rpi_a"].batcher is not got["rpi_b"].batcher
            lanes = {s: got[s].batcher.lane(s, max_backlog_s=60, hop_s=1.0) for s in got}
            for s, seconds in (("rpi_a", 2), ("rpi_b", 3), ("rpi_c", 2)):
                lanes[s].put(Waved(np.zeros(20000 * seconds, np.float32)))  # type: ignore[arg-type]
                lanes[s].close()
            for lane in lanes.values():
                scored = [scores async for _, scores in lane.batches()]
                assert len(scored) == 1 and scored[0].shape == (1,)
        finally:
            await registry.aclose()

    asyncio.run(asyncio.wait_for(main(), 10))


@pytest.mark.parametrize("restart", [True, False])
def test_a_station_whose_sinks_cannot_start_is_reported_while_the_others_run(
        tmp_path: Path, restart: bool) -> None:
    # A folder named like a torn outbox write: the webhook's start cannot remove it.
    outbox = tmp_path / "outbox"
    (outbox / ".0001.tmp").mkdir(parents=True)
    seen: dict[str, Any] = {}
    with LiveHlsServer() as server:  # nothing published: both streams wait on 404s
        broken, other = (_config(server, n, tmp_path) for n in LIVE)
        broken = broken.model_copy(update={"outputs": OutputsConfig(webhook=WebhookSinkConfig(
            url="http://127.0.0.1:9/hook", outbox_dir=outbox))})
        fleet = Runner([broken, other], models=ModelRegistry(scorer=ToneScorer()),
                       registry=CollectorRegistry(), restart_backoff_s=0.2,
                       options=StationOptions(restart_on_failure=restart),
                       timeouts=Timeouts(drain_s=5, sinks_s=2, probes_s=2))

        async def watch() -> None:
            unit = fleet.unit(LIVE[0])
            deadline = time.monotonic() + 20
            while unit.restarts < 2 and unit.state.value != "failed" \
                    and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            seen["ready"] = fleet.readiness()[1]["stations"]
            task = fleet.unit(LIVE[1]).task
            seen["other_running"] = task is not None and not task.done()
            fleet.request_stop("test finished")

        status = _run(fleet, watch)
    state = seen["ready"][LIVE[0]]
    assert state["state"] == ("restarting" if restart else "failed")
    assert "cannot use outbox" in state["reason"] and str(outbox) in state["reason"]
    assert seen["ready"][LIVE[1]]["state"] == "running" and seen["other_running"]
    assert status == (0 if restart else 1)


class _FailsWhileDraining(ToneScorer):
    """Slow enough that windows are queued at the stop; scoring them then fails."""

    def __init__(self) -> None:
        super().__init__()
        self.stopping = False

    def score_waves(self, waves: np.ndarray) -> np.ndarray:
        time.sleep(0.05)
        if self.stopping:
            raise RuntimeError("scoring failed while draining")
        return super().score_waves(waves)


def test_a_failure_while_draining_is_logged_and_fails_the_run(
        tmp_path: Path, recordings: dict[str, list[tuple[bytes, float]]],
        caplog: pytest.LogCaptureFixture) -> None:
    scorer = _FailsWhileDraining()
    with LiveHlsServer() as server:
        _publish(server, recordings)
        fleet = Runner([_config(server, LIVE[0], tmp_path)], models=ModelRegistry(scorer=scorer),
                       registry=CollectorRegistry(),
                       timeouts=Timeouts(drain_s=20, sinks_s=5, probes_s=2))

        async def watch() -> None:
            unit = fleet.unit(LIVE[0])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (
                    unit.station and unit.station.pipeline.windows_scored >= 16):
                await asyncio.sleep(0.05)
            scorer.stopping = True
            fleet.request_stop("test finished")

        status = _run(fleet, watch)
    assert status == 1
    assert fleet.unit(LIVE[0]).state.value == "failed"
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(m.startswith(f"station {LIVE[0]}: ") and "scoring failed while draining" in m
               for m in logged), logged


def _build_info(registry: CollectorRegistry, station: str) -> dict[str, str]:
    for family in registry.collect():
        for s in family.samples:
            if s.name == "listener_build_info" and s.labels.get("station") == station:
                return dict(s.labels)
    raise AssertionError(f"no listener_build_info for {station}")


def _run(fleet: Runner, watch: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run ``fleet`` with ``watch`` beside it (it stops the fleet); the exit status."""
    async def main() -> int:
        watcher = asyncio.create_task(watch())
        status = await fleet.run()
        await watcher
        return status

    return asyncio.run(main())


def test_the_restart_backoff_grows_in_a_crash_loop_and_starts_over_after_a_healthy_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of 1, 1, 1 s, then 600 s, then 1 s: waits of about 5, 10, 20, then 5 again."""
    from listener.runtime import unit as unit_mod
    from listener.runtime.unit import StationUnit

    runs = iter([1.0, 1.0, 1.0, 600.0, 1.0])
    now = [0.0]
    waits: list[float] = []
    station = object.__new__(StationUnit)
    station.station, station.restarts = object(), 0  # type: ignore[assignment]
    station.sinks_timeout_s = 1.0
    station.clock = lambda: now[0]  # type: ignore[method-assign]

    async def run_once(stop: asyncio.Event) -> Exception | None:
        ran = next(runs, None)
        if ran is None:
            return None  # the stream ended: supervise returns
        now[0] += ran
        return RuntimeError("scoring failed")

    async def close_parts(sinks_s: float = 15.0) -> None:
        pass

    async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
        waits.append(seconds)
        return False

    monkeypatch.setattr(station, "_run_once", run_once)
    monkeypatch.setattr(station, "close_parts", close_parts)
    monkeypatch.setattr(station, "_rebuild", lambda: True)
    monkeypatch.setattr(unit_mod, "_stopped_within", stopped_within)
    asyncio.run(station.supervise(asyncio.Event(), 5.0))
    bases = [5.0, 10.0, 20.0, 5.0, 10.0]
    assert len(waits) == 5 and station.restarts == 5
    assert all(0.5 * b <= w <= b for w, b in zip(waits, bases, strict=True)), waits
