"""What an averaged ensemble costs: one network against an ensemble of N, side by side.

Scores the same batches of 2 s windows (the bundled L pod recording, through
the daemon's frontend) with the bundled demo network and with an averaged
ensemble of it repeated N times (``listener ensemble``; the cost does not
depend on the members' weights), in every precision this host runs
natively, and prints windows per second, CPU milliseconds per window and the
ratio. A live station scores about one window a second, so CPU ms per window
/ 1000 is the share of a core one station's network takes.

    python benchmarks/bench_ensemble.py [--members 2] [--windows 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from common import RECORDING, cpu_model, cpu_seconds, host_flags

from listener.config import FrontendConfig, ModelConfig
from listener.model import precision as prec
from listener.model.ensemble import write_ensemble
from listener.model.frontend import Frontend
from listener.model.scorer import Scorer

DEMO = Path(__file__).resolve().parent.parent / "listener" / "data" / "demo_resnet18.safetensors"


def windows(n: int) -> np.ndarray:
    """``n`` prepared 2 s windows of the L pod recording (hop 1 s, wrapping)."""
    audio, rate = sf.read(RECORDING, dtype="float32", always_2d=True)
    fe = Frontend(FrontendConfig())
    starts = [(i * rate) % max(1, len(audio) - 2 * rate) for i in range(n)]
    return np.stack([fe.prepare(audio[s:s + 2 * rate, 0], rate) for s in starts])


def measure(weights: Path, precision: str, waves: np.ndarray) -> tuple[float, float]:
    """Windows per second (wall) and CPU ms per window, after one warm-up batch."""
    scorer = Scorer(ModelConfig(weights=weights, precision=precision, batch_size=16))
    scorer.score_waves(waves[:16])
    wall, cpu = time.perf_counter(), cpu_seconds()
    scorer.score_waves(waves)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return len(waves) / wall, 1000 * cpu / len(waves)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--members", type=int, default=2)
    p.add_argument("--windows", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_model()}; {host_flags()}; torch {torch.__version__}, "
          f"{args.threads} threads; {args.windows} windows of 2 s, batch 16")
    precisions = ["float32"] + (["bfloat16"] if prec.cpu_has_native_bf16() else [])
    waves = windows(args.windows)
    with tempfile.TemporaryDirectory() as tmp:
        ens = write_ensemble([DEMO] * args.members, Path(tmp) / "ens.safetensors")
        for name in precisions:
            one = measure(DEMO, name, waves)
            many = measure(ens.path, name, waves)
            print(f"{name:9s} one network: {one[0]:6.1f} windows/s, {one[1]:6.1f} CPU ms/window"
                  f" | ensemble of {args.members}: {many[0]:6.1f} windows/s, "
                  f"{many[1]:6.1f} CPU ms/window | CPU ratio {many[1] / one[1]:.2f}")
    if len(precisions) == 1:
        print("bfloat16: not native on this CPU, not measured")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
