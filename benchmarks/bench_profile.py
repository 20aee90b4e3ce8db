"""Where a fleet's CPU goes, Python side: a py-spy profile of ``listener run``.

Starts the real daemon over ``--stations`` loopback Orcasound stations (as
``bench_fleet.py``: real MPEG-TS/AAC segments at real-time pace, ResNet18
with random weights, CPU, ``--precision``), waits until every station
reports, then samples it with py-spy (``pip install listener[bench]``) for
``--seconds``. Each sample of a busy thread is put in one bucket by the
innermost frame that says what it does (the network, the frontend, HTTP,
playlist parsing, metrics, logging, JSON, thread hand-offs, the event
loop...); idle threads are not sampled. Prints each bucket's share of the
samples and in cores, and the top functions of the buckets outside the
network and the decoder. ``--svg FILE`` also writes py-spy's flame graph.

    python benchmarks/bench_profile.py [--stations 10] [--seconds 60] [--svg profile.svg]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from bench_fleet import BASE_PORT, POLL_S, all_lags, station_yaml
from common import RECORDING, cpu_model, host_flags, random_resnet18

from listener.demo.server import LiveNode, make_segments

#: (bucket, path fragments): the innermost frame matching a fragment decides.
BUCKETS = (
    ("network (torch)", ("/torch/", "listener/model/scorer.py", "listener/model/network.py")),
    ("frontend (resample, mel)", ("/scipy/", "/numpy/", "listener/model/dsp.py",
                                  "listener/model/frontend.py")),
    ("metrics", ("prometheus_client", "listener/metrics.py")),
    ("logging", ("/logging/",)),
    ("JSON", ("/json/",)),
    ("HTTP fetch", ("/requests/", "/urllib3/", "/http/", "/ssl.py", "/socket.py",
                    "listener/sources/http_client.py", "/aiohttp/client")),
    ("playlist parsing and polling", ("listener/sources/", "/m3u8/")),
    ("decoder pipes", ("listener/audio/decode.py", "asyncio/subprocess.py",
                       "asyncio/streams.py", "asyncio/unix_events.py")),
    ("console and probes (aiohttp)", ("/aiohttp/", "listener/web/")),
    ("thread hand-offs", ("concurrent/futures/", "/threading.py", "/queue.py")),
    ("event loop", ("/asyncio/", "/selectors.py")),
    ("audio: windows, history", ("listener/audio/",)),
    ("pipeline and batcher", ("listener/pipeline/",)),
    ("events and sinks", ("listener/events/",)),
    ("runtime", ("listener/runtime/",)),
)
MODEL_SIDE = {"network (torch)", "decoder pipes"}


def bucket_of(frames: list[str]) -> str:
    for frame in reversed(frames):  # innermost last in py-spy's raw format
        for name, parts in BUCKETS:
            if any(p in frame for p in parts):
                return name
    return "other"


def parse_raw(text: str) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) output: ``frame;frame;... count`` per line."""
    out = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def report(samples: list[tuple[list[str], int]], rate: float, seconds: float) -> str:
    total = sum(c for _, c in samples) or 1
    per_bucket: collections.Counter[str] = collections.Counter()
    top: collections.Counter[str] = collections.Counter()
    for frames, count in samples:
        name = bucket_of(frames)
        per_bucket[name] += count
        if name not in MODEL_SIDE:
            top[f"{name}: {frames[-1]}"] += count
    lines = [f"{total} busy-thread samples ({total / rate / seconds:.2f} cores busy in "
             "Python-visible frames)"]
    for name, count in per_bucket.most_common():
        lines.append(f"  {100 * count / total:5.1f}%  {count / rate / seconds:5.3f} cores  {name}")
    lines.append("top functions outside the network and the decoder:")
    for name, count in top.most_common(15):
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stations", type=int, default=10)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=50.0, help="samples per second")
    p.add_argument("--precision", default="auto")
    p.add_argument("--svg", type=Path, default=None)
    args = p.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy not found: pip install 'listener[bench]'")
    out = sys.stdout.write
    out(f"CPU: {cpu_model()}, {os.cpu_count()} cores, {host_flags()}; {args.stations} "
        f"stations, {args.precision}, {args.seconds:g} s\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weights = random_resnet18(work / "r18.safetensors")
        segments = make_segments(RECORDING, work / "hls", 5 * 60 + 2 * args.seconds)
        nodes = [LiveNode(f"sim{i:03d}", int(time.time()) - 20, work / "hls", segments)
                 for i in range(args.stations)]
        cfg_dir = work / "configs"
        cfg_dir.mkdir()
        for i, node in enumerate(nodes):
            node.start(initially=2)
            (cfg_dir / f"sim{i:03d}.yaml").write_text(yaml.safe_dump(station_yaml(
                i, node, work, weights, BASE_PORT, precision=args.precision)))
        daemon = subprocess.Popen([sys.executable, "-m", "listener", "--log-level", "WARNING",
                                   "run", "--config", str(cfg_dir)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 300
            while len(all_lags([BASE_PORT])) < args.stations and time.monotonic() < deadline:
                time.sleep(2)
            time.sleep(2 * POLL_S)
            raw = work / "raw.txt"
            cmd = [spy, "record", "--pid", str(daemon.pid), "--duration", str(int(args.seconds)),
                   "--rate", str(int(args.rate)), "--full-filenames", "--nonblocking"]
            subprocess.run([*cmd, "--format", "raw", "-o", str(raw)], check=True,
                           capture_output=True)
            lags = all_lags([BASE_PORT])
            if args.svg:
                subprocess.run([*cmd[:5], "10", *cmd[6:], "-o", str(args.svg)], check=True,
                               capture_output=True)
        finally:
            daemon.terminate()
            daemon.wait(60)
            for node in nodes:
                node.stop()
        out(f"lag at the end: max {max(lags.values(), default=float('nan')):.1f} s\n")
        out(report(parse_raw(raw.read_text()), args.rate, args.seconds) + "\n")


if __name__ == "__main__":
    main()
