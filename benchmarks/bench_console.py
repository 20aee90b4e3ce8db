"""The fleet console's status requests: how long each blocks the event loop.

Builds N station consoles on one shared metrics registry, as ``listener run``
does for a fleet (no pipelines: the stations read as starting), serves them
on a loopback port and, while a 10 ms ticker measures how late the event
loop wakes, requests ``/api/status`` and ``/api/overview`` (the pages poll
them every 5 s) and ``/healthz``. Prints the CPU model, then per path the
median answer time and the worst event-loop stall over ``--rounds``; then,
side by side, the fleet's status snapshots as the console takes them (each
station's bound metric children) and as it took them before 2026-12-06
(seven ``registry.get_sample_value`` reads per station, each collecting the
whole shared registry), with the ratio.

    python benchmarks/bench_console.py [--stations 50] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import requests
from common import cpu_model
from prometheus_client import CollectorRegistry

from listener.config.loading import parse_config
from listener.metrics import MetricFamilies, Metrics
from listener.runtime.unit import State
from listener.web.server import WebServer
from listener.web.station_view import fleet_console, station_console

PATHS = ("/api/status", "/api/overview", "/healthz")


class Starting:
    """A station before its pipeline exists (what the console reads of it)."""

    state = State.STARTING
    live_edge_utc = None
    model_info: ClassVar[dict[str, Any]] = {}
    last_error = None
    running_since = None

    def pipeline_stats(self) -> None:
        return None

    def readiness(self) -> tuple[bool, str]:
        return False, "waiting for the first segment"


class Unit:
    def __init__(self, console: Any) -> None:
        self.console = console


def fleet(n: int, folder: Path) -> list[Unit]:
    families = MetricFamilies(CollectorRegistry())
    units = []
    for k in range(n):
        sid = f"node_{k:02d}"
        cfg = parse_config(
            f"station: {{id: {sid}, name: Node {k}, longitude: -123.1, latitude: 48.5}}\n"
            f"stream: {{kind: orcasound, base_url: 'http://127.0.0.1:9', node: {sid}}}\n"
            f"outputs: {{jsonl: {{path: {folder / sid / 'events.jsonl'}}}}}\n"
            f"state: {{dir: {folder / sid / 'state'}}}\n")
        units.append(Unit(station_console(cfg, Metrics(families, sid), Starting())))
    return units


async def measure(units: list[Unit], rounds: int) -> dict[str, tuple[list[float], float]]:
    server = WebServer(CollectorRegistry(), "127.0.0.1", 0, lambda: (True, "ok"),
                       console=fleet_console(units, "127.0.0.1"))
    await server.start()
    worst = 0.0

    async def ticker() -> None:
        nonlocal worst
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - t - 0.01)

    tick = asyncio.create_task(ticker())
    out: dict[str, tuple[list[float], float]] = {p: ([], 0.0) for p in PATHS}
    try:
        for _ in range(rounds):
            for path in PATHS:
                worst = 0.0
                t = time.perf_counter()
                r = await asyncio.to_thread(requests.get, server.url + path, timeout=60)
                r.raise_for_status()
                answer = time.perf_counter() - t
                await asyncio.sleep(0.03)  # the ticker's late wake-up is recorded first
                times, stall = out[path]
                times.append(answer)
                out[path] = (times, max(stall, worst))
    finally:
        tick.cancel()
        await server.stop()
    return out


# What the status snapshot read per station before 2026-12-06, one registry collection each.
OLD_READS = (*(("listener_audio_decoder_restarts_total", {"reason": r})
                for r in ("discontinuity", "gap", "failure", "codec_change", "reanchor")),
             ("listener_stream_lag_seconds", {}), ("listener_audio_level_dbfs", {}))


def snapshot_costs(units: list[Unit]) -> tuple[float, float]:
    """Seconds for every station's status snapshot: as now, and by the old registry reads."""
    t = time.perf_counter()
    for unit in units:
        unit.console.view.status()
    now = time.perf_counter() - t
    t = time.perf_counter()
    for unit in units:
        labels = {"station": unit.console.cfg.station.id}
        for name, extra in OLD_READS:
            unit.console.metrics.registry.get_sample_value(name, {**labels, **extra})
    return now, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}; {args.stations} stations, {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as tmp:
        units = fleet(args.stations, Path(tmp))
        result = asyncio.run(measure(units, args.rounds))
        now_s, old_s = snapshot_costs(units)
    print(f"{'path':15} {'median answer':>14} {'worst loop stall':>17}")
    for path, (times, stall) in result.items():
        print(f"{path:15} {statistics.median(times) * 1000:11.0f} ms {stall * 1000:14.0f} ms")
    print(f"every station's status snapshot: {now_s * 1000:.1f} ms from bound children, "
          f"{old_s * 1000:.0f} ms by registry reads (before 2026-12-06): "
          f"{old_s / now_s:.0f}x")


if __name__ == "__main__":
    main()
