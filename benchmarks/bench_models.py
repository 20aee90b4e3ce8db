"""Audio decoded once for N models: decoder CPU time for N = 1, 2, 3, side by side.

A station with several models decodes each segment once and fans the decoded
blocks out to each model's windows (``listener/pipeline/multi.py`` for files,
``listener/pipeline/lane.py`` live). This script scores one 48 kHz stereo
MPEG-TS/AAC file (the bundled L pod recording looped, as the live stream
carries it) with N = 1, 2, 3 models and prints, for each N:

* **fan-out** (what listener does): ffmpeg's CPU time (its process, from
  ``RUSAGE_CHILDREN``), the decoder's CPU time in this process (reading and
  converting ffmpeg's output) and the whole run's CPU time;
* **one decode per model** (the naive alternative, measured in the same run):
  the same figures with the file decoded once for each model.

The models are cheap stand-ins behind the backend interface (the real
frontend's per-window resampling to 20 kHz, then a mean): the figure of
interest is the decoder's cost, not the network's.

    python benchmarks/bench_models.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from common import RECORDING, cpu_model

from listener.audio.decode import find_ffmpeg
from listener.config import FrontendConfig, ModelEntry, default_config
from listener.model.backends.check import plan_models
from listener.model.frontend import Frontend
from listener.pipeline.multi import score_file_models


class CheapBackend:
    """A stand-in model: the real frontend's resampling, then the window's mean."""

    sample_rate = 20000
    window_s = 2.0
    hop_s = 1.0
    labels = ("other", "call")
    def __init__(self) -> None:
        self.info = {"architecture": "bench-cheap"}
        self.frontend = Frontend(FrontendConfig())

    def prepare(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        return self.frontend.prepare(samples, sample_rate)

    def prepare_batch(self, windows: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        return self.frontend.prepare_batch(windows, sample_rate)

    def predict(self, waves: np.ndarray) -> np.ndarray:
        p = np.clip(np.abs(waves).mean(axis=1) * 10, 0, 1)
        return np.stack([1 - p, p], axis=1)


def make_ts(path: Path, minutes: float) -> Path:
    cmd = [find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
           "-stream_loop", "-1", "-i", str(RECORDING), "-t", str(minutes * 60),
           "-ar", "48000", "-ac", "2", "-c:a", "aac", "-b:a", "128k", "-f", "mpegts", str(path)]
    subprocess.run(cmd, check=True, timeout=600)
    return path


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(path: Path, n_models: int, decodes: int) -> dict[str, float]:
    """Score ``path`` with ``n_models`` models, decoding it ``decodes`` times (1 or N)."""
    entries = [ModelEntry(id=f"m{i}", role="primary" if i == 0 else "shadow")
               for i in range(n_models)]
    plans = plan_models(default_config().model_copy(update={"models": tuple(entries)}))
    groups = [plans] if decodes == 1 else [[p] for p in plans]
    kids0, self0, wall0 = _children_cpu(), _self_cpu(), time.perf_counter()
    decode_cpu = 0.0
    for group in groups:
        result = score_file_models(path, group, [CheapBackend() for _ in group], 60.0)
        decode_cpu += result.decode_cpu_s
    return {"ffmpeg_cpu_s": _children_cpu() - kids0, "decode_read_cpu_s": decode_cpu,
            "total_cpu_s": _self_cpu() - self0 + _children_cpu() - kids0,
            "wall_s": time.perf_counter() - wall0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = make_ts(Path(tmp) / "stream.ts", args.minutes)
        print(f"file: {args.minutes:g} min of 48 kHz stereo AAC in MPEG-TS")
        print(f"{'models':>6} {'mode':<16} {'ffmpeg CPU s':>12} {'decode CPU s':>12} "
              f"{'decoder total':>13} {'run CPU s':>10} {'wall s':>7}")
        base = None
        for n in (1, 2, 3):
            modes = [("fan-out (1 dec)", 1)] + ([("1 dec per model", n)] if n > 1 else [])
            for mode, decodes in modes:
                r = run(path, n, decodes)
                dec = r["ffmpeg_cpu_s"] + r["decode_read_cpu_s"]
                base = base or dec
                print(f"{n:>6} {mode:<16} {r['ffmpeg_cpu_s']:>12.2f} "
                      f"{r['decode_read_cpu_s']:>12.2f} {dec:>8.2f} ({dec / base:.2f}x) "
                      f"{r['total_cpu_s']:>10.2f} {r['wall_s']:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
