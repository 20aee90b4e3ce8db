"""Detection-core throughput, measured side by side in one run.

Prints windows/s for the frontend, the model (ResNet18, ResNet50) and
end-to-end ``listener detect`` on a 10-minute 48 kHz stereo recording, next to

* the dense ceiling of this CPU: a large fp32 matmul's GFLOP/s divided by
  ResNet18's 5.59 GFLOP per (1, 256, 312) window, and
* a baseline with the old OrcaHello pipeline's shape: cut the file into 2 s
  WAV files on disk, read each back, and score them one at a time (batch 1,
  no BN fusion, default memory layout).

Weights are random (speed does not depend on their values).

    python benchmarks/bench_detect.py [--minutes 10] [--baseline-windows 120]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from common import RECORDING

from listener.audio.decode import FileDecoder, find_ffmpeg
from listener.config import Config, FrontendConfig, ModelConfig, StationConfig
from listener.model.dsp import downmix
from listener.model.frontend import Frontend
from listener.model.scorer import Scorer
from listener.pipeline.files import score_file

R18_GFLOP = 5.59


def matmul_gflops(n: int = 4096, reps: int = 4) -> float:
    """Best of three timings of ``reps`` n x n fp32 matmuls."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def make_recording(path: Path, minutes: float) -> Path:
    cmd = [find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
           "-stream_loop", "-1", "-i", str(RECORDING), "-t", str(minutes * 60),
           "-ar", "48000", "-ac", "2", "-c:a", "flac", str(path)]
    subprocess.run(cmd, check=True, timeout=600)
    return path


def bench_frontend(frontend: Frontend, n: int = 64, batch: int = 16) -> float:
    rng = np.random.default_rng(0)
    windows = [rng.standard_normal((2, 96000)).astype(np.float32) * 0.01 for _ in range(n)]
    t = time.perf_counter()
    for i in range(0, n, batch):
        waves = np.stack([frontend.prepare(w, 48000) for w in windows[i:i + batch]])
        with torch.inference_mode():
            frontend(torch.from_numpy(waves))
    return n / (time.perf_counter() - t)


def bench_model(arch: str, n: int, batch: int, **opts: object) -> float:
    scorer = Scorer(ModelConfig(architecture=arch, batch_size=batch, **opts),  # type: ignore[arg-type]
                    allow_random_weights=True)
    x = torch.randn(batch, 1, 256, 312) * 20 - 40
    scorer.score_features(x)
    t = time.perf_counter()
    done = 0
    while done < n:
        scorer.score_features(x)
        done += batch
    return done / (time.perf_counter() - t)


def bench_detect(path: Path, batch: int) -> tuple[float, float, int]:
    cfg = Config(station=StationConfig(id="bench"),
                 model=ModelConfig(architecture="resnet18", batch_size=batch))
    scorer = Scorer(cfg.model, cfg.frontend, allow_random_weights=True)
    t = time.perf_counter()
    result = score_file(path, cfg, scorer.score_waves, scorer.frontend)
    elapsed = time.perf_counter() - t
    return len(result.windows) / elapsed, result.duration_s / elapsed, len(result.windows)


def bench_baseline(path: Path, max_windows: int, workdir: Path) -> float:
    """Old pipeline shape: 2 s WAV files on disk, each read back and scored alone."""
    scorer = Scorer(ModelConfig(architecture="resnet18", batch_size=1, fuse_batchnorm=False,
                                channels_last=False), allow_random_weights=True)
    frontend = Frontend(FrontendConfig())
    t = time.perf_counter()
    decoder = FileDecoder(path)
    audio = np.concatenate([downmix(b) for b in decoder])
    rate = decoder.sample_rate
    files = []
    for i in range(max_windows):
        clip = audio[i * rate:(i + 2) * rate]
        f = workdir / f"win_{i:05d}.wav"
        sf.write(f, clip, rate)
        files.append(f)
    for f in files:
        clip, sr = sf.read(f, dtype="float32")
        wave = frontend.prepare(clip, sr)
        with torch.inference_mode():
            feats = frontend(torch.from_numpy(wave)[None])
        scorer.score_features(feats)
    return max_windows / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--baseline-windows", type=int, default=120)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--skip-resnet50", action="store_true")
    args = p.parse_args()
    out = sys.stdout.write
    out(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    gflops = matmul_gflops()
    ceiling = gflops / R18_GFLOP
    out(f"fp32 matmul: {gflops:.1f} GFLOP/s -> ResNet18 dense ceiling {ceiling:.1f} windows/s\n")
    out(f"frontend (resample + STFT + mel + dB, 48 kHz stereo in): "
        f"{bench_frontend(Frontend(FrontendConfig())):.1f} windows/s\n")
    r18 = bench_model("resnet18", 64, args.batch)
    r18_plain = bench_model("resnet18", 32, args.batch, fuse_batchnorm=False,
                            channels_last=False)
    r18_b1 = bench_model("resnet18", 32, 1)
    out(f"ResNet18 model, batch {args.batch}: {r18:.1f} windows/s "
        f"({100 * r18 / ceiling:.0f}% of ceiling); without BN fusion/channels-last "
        f"{r18_plain:.1f}; batch 1 {r18_b1:.1f}\n")
    if not args.skip_resnet50:
        r50 = bench_model("resnet50", 32, args.batch)
        out(f"ResNet50 model, batch {args.batch}: {r50:.1f} windows/s\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rec = make_recording(work / "ten_minutes.flac", args.minutes)
        wps, rtf, n = bench_detect(rec, args.batch)
        out(f"end-to-end detect, {args.minutes:g} min 48 kHz stereo ({n} windows): "
            f"{wps:.1f} windows/s = {rtf:.1f}x real time = {100 * wps / ceiling:.0f}% "
            f"of the dense ceiling\n")
        base = bench_baseline(rec, args.baseline_windows, work)
        out(f"old-pipeline baseline (2 s WAV files, one at a time, first "
            f"{args.baseline_windows} windows): {base:.1f} windows/s\n")
        out(f"ratio end-to-end / baseline: {wps / base:.2f}x\n")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out(f"peak RSS of this process: {rss:.0f} MB\n")


if __name__ == "__main__":
    main()
