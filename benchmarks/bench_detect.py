"""Detection-core throughput per precision, measured side by side in one run.

Prints, on a long 48 kHz stereo recording (the L pod recording looped):

* the frontend alone: the first-written shape (each window resampled alone,
  complex-abs power, dense mel matmul) and the batched one
  (``Frontend.prepare_batch``, block-sparse mel), windows/s on one thread;
* for each precision this host runs (float32; bfloat16 where the CPU has
  AVX512-BF16/AMX; float16 on CUDA): the ResNet18 model alone and
  ``listener detect`` end to end (``score_file`` as the CLI calls it),
  windows/s, and the ratios end-to-end / model-only and precision / float32;
* a baseline with the old OrcaHello pipeline's shape: cut the file into 2 s
  WAV files on disk, read each back, and score them one at a time (batch 1,
  no BN fusion, default memory layout, float32);
* the dense ceiling of this CPU: a large fp32 matmul's GFLOP/s divided by
  ResNet18's 5.59 GFLOP per (1, 256, 312) window.

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
from common import RECORDING, cpu_model

from listener.audio.decode import FileDecoder, find_ffmpeg
from listener.config import Config, FrontendConfig, ModelConfig, StationConfig
from listener.model.dsp import downmix, power_to_db, resample
from listener.model.frontend import Frontend
from listener.model.precision import cpu_has_native_bf16
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


def old_features(fe: Frontend, windows: list[np.ndarray], rate: int) -> torch.Tensor:
    """The frontend as first written: per-window resample, complex abs, dense mel."""
    wave = torch.from_numpy(np.stack([resample(downmix(w), rate, 20000) for w in windows]))
    spec = torch.stft(wave, 2560, 256, window=fe.window, center=True, pad_mode="reflect",
                      return_complex=True).abs().pow(2.0)
    mel = torch.matmul(spec.transpose(-1, -2), fe.mel_fb).transpose(-1, -2)
    return power_to_db(mel, 100.0)


def bench_frontend(n: int = 64, batch: int = 16) -> tuple[float, float]:
    """(old, batched) windows/s of 48 kHz stereo windows, on one torch thread."""
    fe = Frontend(FrontendConfig())
    rng = np.random.default_rng(0)
    windows = [rng.standard_normal((2, 96000)).astype(np.float32) * 0.01 for _ in range(n)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rates = []
        for new in (False, True):
            t = time.perf_counter()
            with torch.inference_mode():
                for i in range(0, n, batch):
                    chunk = windows[i:i + batch]
                    if new:
                        fe(torch.from_numpy(fe.prepare_batch(chunk, 48000)))
                    else:
                        old_features(fe, chunk, 48000)
            rates.append(n / (time.perf_counter() - t))
        return rates[0], rates[1]
    finally:
        torch.set_num_threads(threads)


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


def bench_detect(path: Path, batch: int, device: str, precision: str) -> tuple[float, float, int]:
    cfg = Config(station=StationConfig(id="bench"),
                 model=ModelConfig(architecture="resnet18", batch_size=batch, device=device,  # type: ignore[arg-type]
                                   precision=precision))  # type: ignore[arg-type]
    scorer = Scorer(cfg.model, cfg.frontend, allow_random_weights=True)
    t = time.perf_counter()
    result = score_file(path, cfg, scorer.score_waves, scorer.frontend,
                        score_features=scorer.score_features)
    elapsed = time.perf_counter() - t
    return len(result.windows) / elapsed, result.duration_s / elapsed, len(result.windows)


def bench_baseline(path: Path, max_windows: int, workdir: Path) -> float:
    """Old pipeline shape: 2 s WAV files on disk, each read back and scored alone."""
    scorer = Scorer(ModelConfig(architecture="resnet18", batch_size=1, fuse_batchnorm=False,
                                channels_last=False, precision="float32"),
                    allow_random_weights=True)
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
        with torch.inference_mode():
            feats = old_features(frontend, [clip], sr)
            feats = torch.nn.functional.pad(feats, (0, 312 - feats.shape[-1]))[:, None]
        scorer.score_features(feats)
    return max_windows / (time.perf_counter() - t)


def precisions() -> list[tuple[str, str]]:
    """(device, precision) pairs this host runs well, float32 on the CPU first."""
    out = [("cpu", "float32")]
    if cpu_has_native_bf16():
        out.append(("cpu", "bfloat16"))
    if torch.cuda.is_available():
        out.append(("cuda", "float16"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--baseline-windows", type=int, default=120)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--model-windows", type=int, default=64)
    p.add_argument("--skip-resnet50", action="store_true")
    args = p.parse_args()
    out = sys.stdout.write
    out(f"{cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"native bf16: {cpu_has_native_bf16()}\n")
    gflops = matmul_gflops()
    ceiling = gflops / R18_GFLOP
    out(f"fp32 matmul: {gflops:.1f} GFLOP/s -> ResNet18 dense ceiling {ceiling:.1f} windows/s\n")
    old_fe, new_fe = bench_frontend()
    out(f"frontend on 1 thread (48 kHz stereo in): first-written {old_fe:.1f} windows/s, "
        f"batched {new_fe:.1f} windows/s ({new_fe / old_fe:.2f}x)\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rec = make_recording(work / "long.flac", args.minutes)
        rows = []
        for device, name in precisions():
            model = bench_model("resnet18", args.model_windows, args.batch, device=device,
                                precision=name)
            e2e, rtf, n = bench_detect(rec, args.batch, device, name)
            rows.append((name, device, model, e2e))
            out(f"ResNet18 {name:8s} on {device}: model-only {model:6.1f} windows/s, "
                f"detect end to end {e2e:6.1f} windows/s = {rtf:.1f}x real time "
                f"({n} windows, {args.minutes:g} min), end-to-end/model-only "
                f"{e2e / model:.2f}\n")
        for name, _device, model, e2e in rows[1:]:
            out(f"ratio {name}/float32: model-only {model / rows[0][2]:.2f}x, "
                f"end to end {e2e / rows[0][3]:.2f}x\n")
        r18_plain = bench_model("resnet18", 32, args.batch, fuse_batchnorm=False,
                                channels_last=False, device="cpu", precision="float32")
        out(f"ResNet18 float32 without BN fusion/channels-last: {r18_plain:.1f} windows/s\n")
        if not args.skip_resnet50:
            r50 = bench_model("resnet50", 32, args.batch, device="cpu", precision="float32")
            out(f"ResNet50 float32 model-only, batch {args.batch}: {r50:.1f} windows/s\n")
        base = bench_baseline(rec, args.baseline_windows, work)
        out(f"old-pipeline baseline (2 s WAV files, one at a time, first "
            f"{args.baseline_windows} windows): {base:.1f} windows/s; end-to-end float32 / "
            f"baseline {rows[0][3] / base:.2f}x\n")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out(f"peak RSS of this process: {rss:.0f} MB\n")


if __name__ == "__main__":
    main()
