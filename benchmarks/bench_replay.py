"""``listener replay`` speed: ~10 minutes of archive scored with the real ResNet18.

The archive is the bundled L pod recording, looped and cut by ffmpeg into
Orcasound-like 10 s MPEG-TS/AAC segments, served by the loopback S3 emulator
of the tests (``tests/support/bucket_server.py``). The network is a seeded random
ResNet18: speed does not depend on the weights' values. The model is loaded
before the clock starts; the replay's wall time covers planning (bucket
listing, playlist), fetching, decoding, scoring and the sinks.

    python benchmarks/bench_replay.py [--minutes 10] [--concurrency 4] [--latency-ms 0]
                                      [--precisions float32,bfloat16]

Each precision this host runs (of ``--precisions``; bfloat16 only where the
CPU has it natively, float16 only on CUDA) replays the same archive in turn,
in one run, so their speeds compare side by side.

``--latency-ms`` adds that much delay to every segment fetch (in the fetch
thread, as a slow link to S3 would), to show what fetching ahead hides.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the loopback bucket lives with the tests

from common import RECORDING, cpu_model, cpu_seconds  # noqa: E402 (benchmarks/ is on sys.path)
from support.bucket_server import BucketServer  # noqa: E402

from listener.config import (  # noqa: E402
    Config,
    ModelConfig,
    OutputsConfig,
    StateConfig,
    StationConfig,
    StreamConfig,
)
from listener.demo.server import make_segments  # noqa: E402
from listener.replay.runner import Replay  # noqa: E402
from listener.sources.http_client import HttpClient  # noqa: E402

NODE = "rpi_bench"
FOLDER = 1_600_000_000


def add_latency(seconds: float) -> None:
    """Delay every segment fetch by ``seconds`` (this benchmark's stand-in for S3's)."""
    plain_get = HttpClient.get

    def slow_get(self: HttpClient, url: str, kind: Any, *args: Any, **kwargs: Any) -> bytes:
        if kind == "segment":
            time.sleep(seconds)
        return plain_get(self, url, kind, *args, **kwargs)

    HttpClient.get = slow_get  # type: ignore[method-assign]


def replay_once(cfg: Config, seconds: float, work: Path, concurrency: int) -> tuple[Any, float]:
    """One replay of the served archive with ``cfg``; (summary, CPU seconds)."""
    from listener.model.scorer import Scorer

    scorer = Scorer(cfg.model, cfg.frontend, allow_random_weights=True)
    start = datetime.fromtimestamp(FOLDER, UTC)
    end = datetime.fromtimestamp(FOLDER + seconds, UTC)
    replay = Replay(cfg, start, end, out_dir=work, scorer=scorer, concurrency=concurrency)
    c0 = cpu_seconds()
    summary = asyncio.run(replay.run())
    return summary, cpu_seconds() - c0


def runnable(names: list[str], device: str) -> list[str]:
    """The precisions of ``names`` this host runs well on ``device``."""
    from listener.errors import ModelLoadError
    from listener.model.precision import plan_execution

    ok = []
    for name in names:
        try:
            plan_execution(name, "cuda" if device == "cuda" else "cpu")
        except ModelLoadError as err:
            sys.stdout.write(f"skipping {name}: {err}\n")
            continue
        ok.append(name)
    return ok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="archive to replay (default 10)")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precisions", default="float32,bfloat16,float16")
    p.add_argument("--latency-ms", type=float, default=0.0,
                   help="delay added to each segment fetch (default 0)")
    args = p.parse_args()
    if args.latency_ms > 0:
        add_latency(args.latency_ms / 1000)
    out = sys.stdout.write
    out(f"{cpu_model()}, {os.cpu_count()} CPUs, torch threads "
        f"{__import__('torch').get_num_threads()}; random ResNet18 on {args.device}\n")
    with tempfile.TemporaryDirectory() as tmp, BucketServer() as bucket:
        work = Path(tmp)
        seconds = args.minutes * 60
        segments = make_segments(RECORDING, work / "hls", seconds + 1.0)
        bucket.add_folder(NODE, FOLDER, [(n, d, work / "hls" / n) for n, d in segments])
        base = None
        for precision in runnable(args.precisions.split(","), args.device):
            cfg = Config(
                station=StationConfig(id=NODE),
                stream=StreamConfig(kind="orcasound", base_url=bucket.base_url, node=NODE),
                model=ModelConfig(architecture="resnet18", device=args.device,
                                  batch_size=args.batch_size, precision=precision),
                outputs=OutputsConfig(log=False),
                state=StateConfig(dir=work / f"state-{precision}"))
            summary, cpu = replay_once(cfg, seconds, work / f"out-{precision}", args.concurrency)
            wps = summary.windows_scored / summary.wall_s
            base = base or wps
            out(f"{precision}: replayed {summary.covered_s:.0f} s ({summary.segments_fetched} "
                f"segments, concurrency {args.concurrency}, +{args.latency_ms:g} ms per fetch) "
                f"in {summary.wall_s:.1f} s = {summary.speed_x:.1f}x real time; "
                f"{summary.windows_scored} windows = {wps:.1f} windows/s ({wps / base:.2f}x "
                f"the first); clips {summary.clips}; CPU {100 * cpu / summary.wall_s:.0f}% "
                f"of one core (listener + ffmpeg)\n")
            if summary.status != "complete":
                out(f"warning: the replay ended as {summary.status}: {summary.error}\n")


if __name__ == "__main__":
    main()
