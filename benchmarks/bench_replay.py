"""``listener replay`` speed: ~10 minutes of archive scored with the real ResNet18.

The archive is the bundled L pod recording, looped and cut by ffmpeg into
Orcasound-like 10 s MPEG-TS/AAC segments, served by the loopback S3 emulator
of the tests (``tests/bucket_server.py``). The network is a seeded random
ResNet18: speed does not depend on the weights' values. The model is loaded
before the clock starts; the replay's wall time covers planning (bucket
listing, playlist), fetching, decoding, scoring and the sinks.

    python benchmarks/bench_replay.py [--minutes 10] [--concurrency 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the loopback bucket lives with the tests

from bucket_server import BucketServer  # noqa: E402

from listener.config import (  # noqa: E402
    Config,
    ModelConfig,
    OutputsConfig,
    StateConfig,
    StationConfig,
    StreamConfig,
)
from listener.demo_server import make_segments  # noqa: E402
from listener.replay import Replay  # noqa: E402

RECORDING = ROOT / "listener" / "data" / "lpod_orcasound_22050hz.wav"
NODE = "rpi_bench"
FOLDER = 1_600_000_000


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (ffmpeg)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="archive to replay (default 10)")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    args = p.parse_args()
    out = sys.stdout.write
    with tempfile.TemporaryDirectory() as tmp, BucketServer() as bucket:
        work = Path(tmp)
        seconds = args.minutes * 60
        segments = make_segments(RECORDING, work / "hls", seconds + 1.0)
        bucket.add_folder(NODE, FOLDER, [(n, d, work / "hls" / n) for n, d in segments])
        cfg = Config(
            station=StationConfig(id=NODE),
            stream=StreamConfig(kind="orcasound", base_url=bucket.base_url, node=NODE),
            model=ModelConfig(architecture="resnet18", device=args.device,
                              batch_size=args.batch_size),
            outputs=OutputsConfig(log=False),
            state=StateConfig(dir=work / "state"))
        from listener.scorer import Scorer

        t0 = time.monotonic()
        scorer = Scorer(cfg.model, cfg.frontend, allow_random_weights=True)
        out(f"model: random ResNet18 on {scorer.info['device']} "
            f"(loaded in {time.monotonic() - t0:.1f} s), torch threads "
            f"{__import__('torch').get_num_threads()}, {os.cpu_count()} CPUs\n")
        start = datetime.fromtimestamp(FOLDER, UTC)
        end = datetime.fromtimestamp(FOLDER + seconds, UTC)
        replay = Replay(cfg, start, end, out_dir=work / "out", scorer=scorer,
                        concurrency=args.concurrency)
        c0 = cpu_seconds()
        summary = asyncio.run(replay.run())
        cpu = cpu_seconds() - c0
    out(f"replayed {summary.covered_s:.0f} s of archive ({summary.segments_fetched} segments, "
        f"concurrency {args.concurrency}) in {summary.wall_s:.1f} s: "
        f"{summary.speed_x:.1f}x real time\n")
    out(f"windows scored: {summary.windows_scored} = "
        f"{summary.windows_scored / summary.wall_s:.1f} windows/s (batch {args.batch_size}); "
        f"clips {summary.clips}; CPU {100 * cpu / summary.wall_s:.0f}% of one core "
        f"(listener + ffmpeg)\n")
    if summary.status != "complete":
        out(f"warning: the replay ended as {summary.status}: {summary.error}\n")


if __name__ == "__main__":
    main()
