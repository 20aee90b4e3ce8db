"""The status snapshot the console shows for one station (``station_view.station_status``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry
from support.daemon_support import station_config

from listener.metrics import Metrics
from listener.runtime.readiness import LastError
from listener.runtime.unit import State
from listener.web.station_view import station_console, station_status


class Stub:
    """What the status page reads from a running station, before its pipeline exists."""

    state = State.STARTING
    live_edge_utc = None
    model_info: ClassVar[dict[str, Any]] = {}
    last_error: Any = None
    running_since = None

    def pipeline_stats(self) -> None:
        return None

    def readiness(self) -> tuple[bool, str]:
        return False, "waiting for the first segment"


def test_decoder_restarts_exclude_the_first_start_and_the_last_error_has_its_age(
        tmp_path: Path) -> None:
    cfg = station_config("http://127.0.0.1:9", "node_a", tmp_path)
    metrics = Metrics(CollectorRegistry(), "node_a")
    daemon = Stub()
    metrics.decoder_restart("start")
    status = station_status(cfg, metrics, daemon)
    assert status["decoder_restarts"] == 0 and status["last_error"] is None
    assert status["running_since"] is None  # not running yet: unknown time is "not running"
    metrics.decoder_restart("gap")
    metrics.decoder_restart("start")  # the restart after the gap starts it again
    now = time.time()
    daemon.last_error = LastError("playlist", "latest.txt: HTTP 404", now - 180.0,
                                  now).to_json(now)
    status = station_status(cfg, metrics, daemon)
    assert status["decoder_restarts"] == 1
    err = status["last_error"]
    assert err["message"] == "latest.txt: HTTP 404" and 179.0 <= err["for_s"] <= 190.0
    # The live view marks the station's own threshold.
    assert station_console(cfg, metrics, daemon).view.threshold == cfg.detection.local_threshold


def test_the_audio_level_is_unknown_until_audio_is_decoded_then_marks_silence(
        tmp_path: Path) -> None:
    import json

    import numpy as np

    from listener.audio.level import LevelMeter
    from listener.web.index import DetectionIndex
    from listener.web.overview import station_row
    cfg = station_config("http://127.0.0.1:9", "node_a", tmp_path)
    metrics = Metrics(CollectorRegistry(), "node_a")
    status = station_status(cfg, metrics, Stub())
    assert status["audio_level_dbfs"] is None  # not 0 dBFS: nothing was heard yet
    json.dumps(status, allow_nan=False)  # what /api/status sends: no NaN in it
    meter = LevelMeter()
    metrics.audio_level.set(meter.update(np.full((1, 48_000), 0.001, np.float32), 48_000))
    assert station_status(cfg, metrics, Stub())["audio_level_dbfs"] == -60.0

    view = station_console(cfg, metrics, Stub()).view
    index = DetectionIndex(None, None)
    assert station_row(view, {"audio_level_dbfs": -60.0}, index, time.time())["silent"] is False
    metrics.audio_level.set(meter.update(np.zeros((1, 20 * 48_000), np.float32), 48_000))
    status = station_status(cfg, metrics, Stub())
    assert status["audio_level_dbfs"] == -120.0
    assert station_row(view, status, index, time.time())["silent"] is True


def test_a_level_outside_a_models_training_reaches_the_status_and_the_overview(
        tmp_path: Path) -> None:
    import json

    from listener.audio.level import LevelRange, LevelWatch
    from listener.pipeline.contracts import PipelineStats
    from listener.web.index import DetectionIndex
    from listener.web.overview import station_row

    watch = LevelWatch("node_a", [LevelRange("demo", -81.0, -1.0)], hold_s=60.0)

    class Running(Stub):
        def pipeline_stats(self) -> PipelineStats:  # type: ignore[override]
            return PipelineStats(1, 1, 0.0, None, None, None, watch.outside())

    cfg = station_config("http://127.0.0.1:9", "node_a", tmp_path)
    metrics = Metrics(CollectorRegistry(), "node_a")
    view = station_console(cfg, metrics, Running()).view
    index = DetectionIndex(None, None)
    status = station_status(cfg, metrics, Running())
    assert status["level_outside"] == [] and not station_row(view, status, index,
                                                             time.time())["level_outside"]
    for _ in range(120):
        watch.update(-93.0, 0.5)
    status = station_status(cfg, metrics, Running())
    outside = [{"model": "demo", "side": "below", "trained_dbfs": [-81.0, -1.0]}]
    assert status["level_outside"] == outside
    json.dumps(status, allow_nan=False)
    assert station_row(view, status, index, time.time())["level_outside"] == outside


class CountingRegistry(CollectorRegistry):
    """A registry that counts whole-registry collections (each one reads every series)."""

    collections = 0

    def collect(self) -> Any:
        self.collections += 1
        return super().collect()


def recording(status: Callable[[], dict[str, Any]],
              threads: set[int]) -> Callable[[], dict[str, Any]]:
    """``status``, noting the thread each snapshot is taken on."""
    def wrapped() -> dict[str, Any]:
        threads.add(threading.get_ident())
        return status()
    return wrapped


def test_fleet_status_and_overview_read_each_value_without_collecting_the_registry(
        tmp_path: Path) -> None:
    import asyncio

    import requests

    from listener.metrics import MetricFamilies
    from listener.web.server import WebServer
    from listener.web.station_view import fleet_console

    registry = CountingRegistry()
    families = MetricFamilies(registry)
    units: list[Any] = []
    threads: set[int] = set()
    for k in range(5):  # one shared registry, as the runner builds a fleet's
        sid = f"node_{k}"
        metrics = Metrics(families, sid)
        metrics.lag_seconds.set(float(k))
        metrics.decoder_restart("gap")
        console = station_console(station_config("http://127.0.0.1:9", sid, tmp_path / sid),
                                  metrics, Stub())
        console.view.status = recording(console.view.status, threads)
        units.append(type("Unit", (), {"console": console})())

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        server = WebServer(CollectorRegistry(), "127.0.0.1", 0, lambda: (True, "ok"),
                           console=fleet_console(units, "127.0.0.1"))
        await server.start()
        try:
            docs = [await asyncio.to_thread(requests.get, server.url + path, timeout=10)
                    for path in ("/api/status", "/api/overview")]
        finally:
            await server.stop()
        return docs[0].json(), docs[1].json()

    status, overview = asyncio.run(main())
    # Reading a value costs one series, not a collection of every station's metrics.
    assert registry.collections == 0
    assert [s["lag_s"] for s in status["stations"]] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [s["decoder_restarts"] for s in status["stations"]] == [1] * 5
    assert [r["lag_s"] for r in overview["stations"]] == [0.0, 1.0, 2.0, 3.0, 4.0]
    # The snapshots are taken off the event loop (the main thread here).
    assert threads and threading.get_ident() not in threads
