"""Soak: hours of stream time through the real daemon at 20x, with faults; RSS over time.

A loopback Orcasound node publishes the bundled L pod recording, looped and
cut into real MPEG-TS/AAC segments by ffmpeg, at ``--pace`` times real time.
Faults are sprinkled in by segment number (an HTML error page served with
200, a body cut in half, a 500 burst, a 404 that later appears, a stalled
response), so the recovery paths run for hours too. The daemon runs in this
process with the real ResNet18 (random weights: memory does not depend on
them) on CPU; RSS is sampled every few seconds.

Prints: CPU model, stream time and wall time, RSS after warm-up and at the
end, growth per hour of stream time (target: flat within 20 MB after
warm-up), and what the daemon counted (gaps, dropped seconds by reason).

    python benchmarks/bench_soak.py [--hours 2] [--pace 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from common import RECORDING, cpu_model, cpu_seconds
from prometheus_client import CollectorRegistry

from listener.config import (
    Config,
    FetchConfig,
    JsonlSinkConfig,
    MetricsConfig,
    ModelConfig,
    OutputsConfig,
    StateConfig,
    StationConfig,
    StreamConfig,
)
from listener.demo.server import LiveNode, make_segments
from listener.metrics import DROP_REASONS
from listener.model.scorer import Scorer
from listener.runtime.daemon import Daemon

NODE = "rpi_soak"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class FaultyNode(LiveNode):
    """A LiveNode whose segments fail now and then, each fault by segment number."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.requests: dict[str, int] = {}
        self.faults: dict[str, int] = {}

    def fault_for(self, path: str) -> str | None:
        if not path.endswith(".ts"):
            return None
        n = int(path.rsplit("live", 1)[1][:-3])
        seen = self.requests[path] = self.requests.get(path, 0) + 1
        kind = None
        if n % 97 == 13:
            kind = "html"
        elif n % 89 == 21:
            kind = "half"
        elif n % 83 == 31 and seen <= 3:
            kind = "500"
        elif n % 79 == 41 and seen == 1:
            kind = "404"
        elif n % 73 == 51 and seen == 1:
            kind = "stall"
        if kind:
            self.faults[kind] = self.faults.get(kind, 0) + 1
        return kind

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        base = super()._handler()
        node = self

        class Faulty(base):  # type: ignore[valid-type, misc]
            def do_GET(self) -> None:
                fault = node.fault_for(self.path)
                if fault in ("500", "404"):
                    self.send_error(HTTPStatus(int(fault)))
                    return
                if fault == "stall":
                    time.sleep(1.5)
                if fault in ("html", "half"):
                    name = self.path.rsplit("/", 1)[1]
                    body = b"<html><body>503</body></html>" if fault == "html" else \
                        (node.seg_dir / name).read_bytes()
                    body = body if fault == "html" else body[:len(body) // 2]
                    self.send_response(HTTPStatus.OK)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                super().do_GET()

        return Faulty


def config(base_url: str, work: Path) -> Config:
    return Config(
        station=StationConfig(id=NODE, name="soak", longitude=-123.0, latitude=48.5),
        stream=StreamConfig(kind="orcasound", base_url=base_url, node=NODE,
                            poll_interval_s=0.25, start_segments_back=2,
                            fetch=FetchConfig(connect_timeout_s=2, read_timeout_s=3, retries=3,
                                              backoff_initial_s=0.05, backoff_max_s=0.5)),
        model=ModelConfig(architecture="resnet18", batch_size=16, max_batch_wait_s=0.2),
        outputs=OutputsConfig(jsonl=JsonlSinkConfig(path=work / "events.jsonl"), log=False),
        metrics=MetricsConfig(enabled=False),
        state=StateConfig(dir=work / "state"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=2.0, help="stream time to publish")
    p.add_argument("--pace", type=float, default=20.0, help="times real time")
    p.add_argument("--every", type=float, default=5.0, help="RSS sample period, s")
    args = p.parse_args()
    out = sys.stdout.write
    out(f"CPU: {cpu_model()}\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        segments = make_segments(RECORDING, work / "hls", args.hours * 3600)
        out(f"made {len(segments)} segments in {time.monotonic() - t0:.0f} s\n")
        node = FaultyNode(NODE, int(time.time()) - 20, work / "hls", segments)
        node.start(initially=2, pace=args.pace)
        cfg = config(node.base_url, work)
        scorer = Scorer(cfg.model, cfg.frontend, allow_random_weights=True)
        daemon = Daemon(cfg, scorer=scorer, registry=CollectorRegistry())
        samples: list[tuple[float, float, float]] = []  # (wall s, stream s, RSS MB)
        done = threading.Event()
        total_s = sum(d for _, d in segments)
        hop = cfg.detection.hop_s

        async def watch() -> None:
            start = time.monotonic()
            while True:
                await asyncio.sleep(args.every)
                pipe = daemon.pipeline
                scored = pipe.stats().windows_scored * hop if pipe else 0.0
                samples.append((time.monotonic() - start, scored, rss_mb()))
                if node.published >= len(segments) and scored + lost_s(daemon) >= total_s - 60:
                    break
                if time.monotonic() - start > total_s / args.pace * 1.5 + 120:
                    out("stopping: the daemon fell behind\n")
                    break
            daemon.request_stop("soak done")

        async def run() -> None:
            task = asyncio.create_task(watch())
            await daemon.run()
            task.cancel()
            done.set()

        c0 = cpu_seconds()
        asyncio.run(run())
        node.stop()
        cpu = cpu_seconds() - c0
    report(out, samples, daemon, node, cpu, args)


def lost_s(daemon: Daemon) -> float:
    """Stream seconds the daemon counted lost, all reasons (the faults cost some)."""
    return sum(daemon.registry.get_sample_value("listener_audio_dropped_seconds_total",
                                                {"station": NODE, "reason": r}) or 0.0
               for r in DROP_REASONS)


def report(out: object, samples: list[tuple[float, float, float]], daemon: Daemon,
           node: FaultyNode, cpu: float, args: argparse.Namespace) -> None:
    write = out  # type: ignore[assignment]
    assert callable(write)
    warm = [s for s in samples if s[1] >= 600] or samples
    first, last = warm[0], samples[-1]
    hours = max((last[1] - first[1]) / 3600, 1e-9)
    peak = max(s[2] for s in samples)
    reg = daemon.registry
    dropped = {r: reg.get_sample_value("listener_audio_dropped_seconds_total",
                                       {"station": NODE, "reason": r}) or 0.0
               for r in DROP_REASONS}
    gaps = reg.get_sample_value("listener_hls_gaps_total", {"station": NODE}) or 0.0
    write(f"stream time scored: {last[1] / 3600:.2f} h in {last[0] / 60:.1f} min wall "
          f"({last[1] / max(last[0], 1e-9):.1f}x real time, pace {args.pace:g}x); "
          f"CPU {cpu:.0f} s\n")
    write(f"RSS: {first[2]:.0f} MB after warm-up (10 min of stream), {last[2]:.0f} MB at the "
          f"end, peak {peak:.0f} MB\n")
    write(f"growth after warm-up: {last[2] - first[2]:+.1f} MB over {hours:.2f} h of stream "
          f"= {(last[2] - first[2]) / hours:+.1f} MB per stream hour (target: within 20 MB)\n")
    write(f"faults served: {dict(sorted(node.faults.items()))}\n")
    write(f"gaps: {gaps:.0f}; dropped seconds: "
          + ", ".join(f"{k}={v:.1f}" for k, v in dropped.items() if v) + "\n")
    write("RSS samples (stream min: MB): "
          + " ".join(f"{s[1] / 60:.0f}:{s[2]:.0f}" for s in samples[::max(1, len(samples) // 24)])
          + "\n")


if __name__ == "__main__":
    main()
