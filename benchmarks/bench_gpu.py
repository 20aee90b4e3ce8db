"""GPU throughput and float16 error, side by side in one run (needs CUDA).

On the first CUDA device, for ResNet18 and ResNet50 (random weights; speed
does not depend on them):

* model-only windows/s in float32 and float16 (the scorer's own path: body
  converted once, stem and head float32) at batch sizes 16..512, eager;
* the same in float16 under ``torch.compile`` (default mode) and with CUDA
  graphs (``mode="reduce-overhead"``), where they help;
* the frontend on the GPU (STFT, dense mel, dB on a batch of 20 kHz waves;
  the CPU-side resampling, ``prepare_batch``, timed apart) in windows/s;
* float16 |score - float32 score| p50/p99/max on the shared real recordings
  with a BatchNorm-calibrated random ResNet18 (``--weights`` for a real one).

    python benchmarks/bench_gpu.py [--batches 16,64,256,512] [--no-compile]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from common import ROOT, cpu_model

sys.path.insert(0, str(ROOT / "tests"))  # the calibrated random network lives with the tests
from support.calibrated import save_calibrated

from listener.config import ModelConfig
from listener.model.frontend import Frontend
from listener.model.scorer import Scorer

SHARED = ROOT.parent / "shared" / "data"


def timed(fn: Callable[[], object], windows: int, min_s: float = 2.0) -> float:
    """Windows/s of ``fn`` (which handles ``windows`` windows), after warm-up, synchronised."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    done, t = 0, time.perf_counter()
    while time.perf_counter() - t < min_s:
        fn()
        done += windows
    torch.cuda.synchronize()
    return done / (time.perf_counter() - t)


def model_rates(arch: str, batch: int, compile_modes: list[str]) -> dict[str, float]:
    x = (torch.randn(batch, 1, 256, 312) * 20 - 40).cuda()
    out: dict[str, float] = {}
    for name in ("float32", "float16"):
        s = Scorer(ModelConfig(architecture=arch, device="cuda", precision=name,  # type: ignore[arg-type]
                               batch_size=batch), allow_random_weights=True)
        with torch.inference_mode():
            out[name] = timed(lambda s=s: s._network(x), batch)
    for mode in compile_modes:
        s = Scorer(ModelConfig(architecture=arch, device="cuda", precision="float16",  # type: ignore[arg-type]
                               batch_size=batch), allow_random_weights=True)
        fn = torch.compile(s._network, mode=mode)
        with torch.inference_mode():
            out[f"float16+compile({mode})"] = timed(lambda fn=fn: fn(x), batch)
    return out


def frontend_rates(batch: int) -> tuple[float, float]:
    """(GPU STFT+mel+dB, CPU prepare_batch) windows/s for 48 kHz stereo 2 s windows."""
    fe = Frontend().cuda().eval()
    rng = np.random.default_rng(0)
    waves = torch.from_numpy(rng.standard_normal((batch, 40000), dtype=np.float32) * 0.01).cuda()
    with torch.inference_mode():
        gpu = timed(lambda: fe(waves), batch)
    raw = rng.standard_normal((batch, 2, 96000)).astype(np.float32)
    t = time.perf_counter()
    fe.prepare_batch(raw, 48000)
    return gpu, batch / (time.perf_counter() - t)


def fp16_error(weights: Path | None, tmp: Path) -> str:
    fe = Frontend()
    feats = []
    for f in sorted((SHARED / "recordings").glob("*.wav")):
        audio, rate = sf.read(f, dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        wins = np.stack([audio[i * rate:(i + 2) * rate] for i in range(len(audio) // rate - 1)])
        with torch.no_grad():
            feats.append(fe(torch.from_numpy(fe.prepare_batch(wins, rate))))
    x = torch.cat(feats)
    if weights is None:
        weights = save_calibrated(tmp / "r18.safetensors", x[::4])
    ref = Scorer(ModelConfig(weights=weights, device="cpu", precision="float32")).score_features(x)
    got = Scorer(ModelConfig(weights=weights, device="cuda", precision="float16")).score_features(x)
    d = np.abs(got - ref)
    return (f"float16 on CUDA vs float32 on CPU, {len(d)} real windows: |diff| p50 "
            f"{np.percentile(d, 50):.2e} p99 {np.percentile(d, 99):.2e} max {d.max():.2e}; "
            f"per-second flips {int(np.sum((got > 0.5) != (ref > 0.5)))}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="16,64,128,256,512")
    p.add_argument("--archs", default="resnet18,resnet50")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--weights", type=Path, default=None)
    args = p.parse_args()
    out = sys.stdout.write
    if not torch.cuda.is_available():
        out("no CUDA device: nothing to measure (run this on a GPU host)\n")
        return
    out(f"{torch.cuda.get_device_name(0)}; host {cpu_model()}; torch {torch.__version__}\n")
    modes = [] if args.no_compile else ["default", "reduce-overhead"]
    for arch in args.archs.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            rates = model_rates(arch, batch, modes)
            base = rates["float32"]
            text = ", ".join(f"{k} {v:.0f} ({v / base:.2f}x)" for k, v in rates.items())
            out(f"{arch} batch {batch}: windows/s {text}\n")
    for batch in (64, 256):
        gpu, cpu = frontend_rates(batch)
        out(f"frontend batch {batch}: GPU STFT+mel+dB {gpu:.0f} windows/s; CPU "
            f"prepare_batch (48 kHz stereo) {cpu:.0f} windows/s on one thread\n")
    with tempfile.TemporaryDirectory() as tmp:
        out(fp16_error(args.weights, Path(tmp)) + "\n")


if __name__ == "__main__":
    main()
