"""Training cost per step, split into its two halves, on this host's CPU and GPU.

``listener train`` makes each batch on the CPU (numpy: crops, mixing, the
channel augmentations; :func:`listener.training.trainer.make_batch`) and
steps the network on the device (frontend, SpecAugment masks, forward and
backward under the recipe's autocast, AdamW, the moving average). This
times both for the production input (2 s windows, 256 mel x 312 frames),
batch 16, ResNet18, on synthetic recordings (the time does not depend on
the audio), so the speed-up a GPU brings to the demo recipe can be read
off: a step costs ``batch + step`` and the batch half stays on the CPU.

    python benchmarks/bench_train_step.py [--steps 10] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np
import torch
from common import ROOT, cpu_model

sys.path.insert(0, str(ROOT / "tests"))  # synthetic calls and noise live with the tests
from training.recipe_support import recordings

from listener.training.augment import AugmentConfig
from listener.training.trainer import TrainConfig, _Run, make_batch


def per_step(cfg: TrainConfig, device: torch.device, steps: int) -> tuple[float, float]:
    """Seconds per batch made (CPU) and per network step (``device``), after one warm-up."""
    recs = recordings(calls=8, backgrounds=8)
    run = _Run(cfg, recs, [], None, device)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    rate = run.frontend.cfg.sample_rate
    batches = [make_batch(run.calls, run.beds, cfg.batch_size, run.n, rng, cfg.augment,
                          rate=rate)]
    t = time.perf_counter()
    batches += [make_batch(run.calls, run.beds, cfg.batch_size, run.n, rng, cfg.augment,
                           rate=rate)
                for _ in range(steps)]
    batch_s = (time.perf_counter() - t) / steps
    run.step(*batches[0], gen)  # warm-up: allocator, kernels chosen
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for waves, labels in batches[1:]:
        run.step(waves, labels, gen)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch_s, (time.perf_counter() - t) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()
    cfg = TrainConfig(batch_size=args.batch_size, augment=replace(AugmentConfig(), aac_p=0.0))
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available()
                                       else [])
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"host {cpu_model()}, {torch.get_num_threads()} threads; {gpu}; torch "
          f"{torch.__version__}; resnet18, batch {cfg.batch_size}, {args.steps} steps")
    rows = {}
    for device in devices:
        batch_s, step_s = per_step(cfg, device, args.steps)
        rows[device.type] = batch_s + step_s
        print(f"{device.type}: make_batch {batch_s * 1e3:.0f} ms (CPU), network step "
              f"{step_s * 1e3:.0f} ms; {cfg.batch_size / (batch_s + step_s):.0f} training "
              f"windows/s; the demo recipe's epoch of 20 steps {20 * (batch_s + step_s):.1f} s")
    if "cuda" in rows:
        print(f"cuda over cpu: {rows['cpu'] / rows['cuda']:.1f}x per step")


if __name__ == "__main__":
    main()
