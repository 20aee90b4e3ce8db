"""The live daemon against a real-time loopback HLS stream, with the real ResNet18.

Measures, in one run:

1. catch-up: a 10-minute outage (60 segments already listed, resume from the
   oldest) is scored at N x real time;
2. following a live stream at real-time pace: CPU use (this process plus
   ffmpeg) and peak RSS per stream;
3. latency from a segment becoming available (listed in the playlist) to the
   detection event of the clip it completes. Random weights are used (speed
   does not depend on them); a seeded random ResNet18 flags every clip, which
   makes every clip an event to time.

    python benchmarks/bench_live.py [--live-minutes 3] [--poll 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import RECORDING, cpu_seconds
from prometheus_client import CollectorRegistry

from listener.config import (
    Config,
    MetricsConfig,
    ModelConfig,
    OutputsConfig,
    StateConfig,
    StationConfig,
    StreamConfig,
)
from listener.demo.server import LiveNode, make_segments
from listener.model.scorer import Scorer
from listener.runtime.builder import StationOptions
from listener.runtime.daemon import Daemon

NODE = "rpi_bench"


class _TimingSink:
    """Records when each detection event reaches the sinks."""

    name = "timing"
    reports_own_deliveries = False
    durable = False

    def __init__(self) -> None:
        self.events: list[tuple[float, Any]] = []

    async def start(self) -> None:
        return None

    async def emit(self, event: Any) -> None:
        if event.kind == "detection":
            self.events.append((time.monotonic(), event))

    async def close(self, timeout_s: float) -> None:
        return None


def _config(base_url: str, work: Path, back: int, poll: float) -> Config:
    return Config(
        station=StationConfig(id=NODE),
        stream=StreamConfig(kind="orcasound", base_url=base_url, node=NODE,
                            poll_interval_s=poll, start_segments_back=back),
        model=ModelConfig(architecture="resnet18", batch_size=16, max_batch_wait_s=0.1),
        outputs=OutputsConfig(log=False),
        metrics=MetricsConfig(enabled=False),
        state=StateConfig(dir=work / "state"))


async def _run(daemon: Daemon, until: Any) -> None:
    async def watch() -> None:
        while not until():
            await asyncio.sleep(0.05)
        daemon.request_stop("benchmark done")

    task = asyncio.create_task(watch())
    await daemon.run()
    task.cancel()


def _latencies(sink: _TimingSink, offsets: list[float], published_at: dict[int, float],
               window_s: float) -> list[float]:
    """Seconds from the segment that completes each event's clip being listed to the event."""
    latencies = []
    for when, event in sink.events:
        # the clip closes once the window starting at its end exists
        need = event.clip.end_s + window_s
        seg = next(i for i in range(len(offsets) - 1) if offsets[i + 1] >= need)
        if seg in published_at:
            latencies.append(when - published_at[seg])
    return latencies


def _catch_up(cfg: Config, scorer: Scorer) -> float:
    """Seconds a fresh daemon takes to score the 10-minute backlog (590 windows)."""
    daemon = Daemon(cfg, scorer=scorer, registry=CollectorRegistry(),
                    options=StationOptions(extra_sinks=[_TimingSink()]))
    t0 = time.monotonic()
    asyncio.run(_run(daemon, lambda: daemon.pipeline is not None
                     and daemon.pipeline.windows_scored >= 590))
    return time.monotonic() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--live-minutes", type=float, default=3.0)
    p.add_argument("--poll", type=float, default=1.0)
    args = p.parse_args()
    out = sys.stdout.write
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        total_s = 600 + args.live_minutes * 60 + 30
        segments = make_segments(RECORDING, work / "hls", total_s)
        backlog = 60
        start = int(time.time()) - int(sum(d for _, d in segments[:backlog]))
        node = LiveNode(NODE, start, work / "hls", segments)
        node.start(initially=backlog)
        cfg = _config(node.base_url, work, backlog, args.poll)
        scorer = Scorer(cfg.model, cfg.frontend, allow_random_weights=True)

        took = _catch_up(cfg, scorer)  # 1. after a 10-minute outage
        out(f"catch-up: 10 min backlog scored in {took:.1f} s = {600 / took:.1f}x real time\n")

        # 2 + 3. follow at real-time pace
        published_at: dict[int, float] = {}
        offsets = [0.0]
        for _, d in segments:
            offsets.append(offsets[-1] + d)

        sink = _TimingSink()
        daemon = Daemon(cfg, scorer=scorer, registry=CollectorRegistry(),
                        options=StationOptions(extra_sinks=[sink]))
        first = node.published
        live_s = args.live_minutes * 60
        c0, t0 = cpu_seconds(), time.monotonic()

        def until() -> bool:
            for i in range(first, node.published):
                published_at.setdefault(i, time.monotonic())
            return time.monotonic() - t0 > live_s

        asyncio.run(_run(daemon, until))
        wall = time.monotonic() - t0
        cpu = cpu_seconds() - c0
        node.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out(f"following live for {wall:.0f} s: CPU {100 * cpu / wall:.0f}% of one core "
        f"(listener + ffmpeg), peak RSS {rss:.0f} MB\n")
    latencies = _latencies(sink, offsets, published_at, cfg.detection.window_s)
    if latencies:
        latencies.sort()
        out(f"segment available -> detection event ({len(latencies)} clips, poll every "
            f"{args.poll:g} s): median {latencies[len(latencies) // 2]:.2f} s, "
            f"max {latencies[-1]:.2f} s\n")
    else:
        out("no detection events during the live phase (run longer)\n")


if __name__ == "__main__":
    main()
