"""The live pipeline's resampling step: per-window ``prepare`` vs the batched path.

The station cuts windows from ffmpeg's output as it arrives (64 KiB reads,
0.34 s of 48 kHz mono), so it mostly hands one window at a time to
``prepare_windows``; a replay's catch-up or a lane's 3 s windows do the
same. This prints, side by side on one thread, windows/s for:

* ``prepare`` per window (``scipy.signal.resample_poly``, the old live path);
* ``prepare_batch`` of one window per call (the live path now: the filter
  designed once per rate pair, scipy's ``upfirdn``);
* ``prepare_batch`` of 16 windows per call (``listener detect``'s batches);

at 48 kHz (Orcasound's AAC), 44.1 kHz (an 8 821-tap filter) and 22.05 kHz,
on real audio (the bundled L pod recording, resampled once to each rate).

    python benchmarks/bench_prepare.py [--seconds S]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np
import soundfile
import torch
from common import RECORDING, cpu_model

from listener.model.dsp import resample
from listener.model.frontend import Frontend


def rate(fn: Callable[[], int], seconds: float) -> float:
    """Windows per second of ``fn`` (which returns how many windows it did), best of 3."""
    fn()  # warm: filter design, allocations
    best = 0.0
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            n += fn()
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0, help="timing per figure")
    args = p.parse_args()
    torch.set_num_threads(1)
    audio, native = soundfile.read(RECORDING, dtype="float32")
    fe = Frontend()
    out = sys.stdout.write
    out(f"{cpu_model()}, one thread; windows/s (2 s windows -> 20 kHz)\n")
    out(f"{'rate':>7} {'prepare':>9} {'batch of 1':>11} {'batch of 16':>12} "
        f"{'1 vs prepare':>13} {'16 vs prepare':>14}\n")
    for sr in (48000, 44100, 22050):
        x = resample(audio, native, sr)
        wins = [x[i * sr:(i + 2) * sr].copy() for i in range(16)]
        per = rate(lambda w=wins, r=sr: sum(fe.prepare(v, r).size > 0 for v in w), args.seconds)
        one = rate(lambda w=wins, r=sr: sum(len(fe.prepare_batch([v], r)) for v in w),
                   args.seconds)
        many = rate(lambda w=wins, r=sr: len(fe.prepare_batch(w, r)), args.seconds)
        assert all(np.array_equal(fe.prepare_batch([v], sr)[0], fe.prepare(v, sr)) for v in wins)
        out(f"{sr:>7} {per:>9.0f} {one:>11.0f} {many:>12.0f} {one / per:>12.2f}x "
            f"{many / per:>13.2f}x\n")


if __name__ == "__main__":
    main()
