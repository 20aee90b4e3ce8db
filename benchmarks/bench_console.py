"""The fleet console's status requests: how long each blocks the event loop.

Builds N station consoles on one shared metrics registry, as ``listener run``
does for a fleet (no pipelines: the stations read as starting), serves them
on a loopback port and, while a 10 ms ticker measures how late the event
loop wakes, requests ``/api/status`` and ``/api/overview`` (the pages poll
them every 5 s) and ``/healthz``. Prints the CPU model, then per path the
median answer time and the worst event-loop stall over ``--rounds``.

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}; {args.stations} stations, {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(measure(fleet(args.stations, Path(tmp)), args.rounds))
    print(f"{'path':15} {'median answer':>14} {'worst loop stall':>17}")
    for path, (times, stall) in result.items():
        print(f"{path:15} {statistics.median(times) * 1000:11.0f} ms {stall * 1000:14.0f} ms")


if __name__ == "__main__":
    main()
