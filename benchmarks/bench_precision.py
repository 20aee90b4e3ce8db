"""bfloat16 / float16 judged by decisions: flips first, then the score error.

For every precision this host runs (bfloat16 where the CPU has it natively,
float16 on CUDA), every file of ``../shared/data/recordings``,
``../shared/data/clips`` and ``../shared/data/hls`` (and of each
``--labelled`` folder) goes through ``listener detect``'s own path
(``score_file``) in float32 and in that precision, and the script prints,
per set of files:

* per-second decisions (score > local_threshold) that flip, and how many
  windows lie within 0.05 of the threshold (where a flip could happen);
* per-clip decisions (OrcaHello's rule: detected or not) that flip;
* for a labelled folder (clips under ``calls/`` or ``positive/`` are calls,
  under ``nocalls/`` or ``negative/`` not), each precision's clip accuracy
  against the labels;
* then p50 / p99 / max of |score - float32 score| over all windows.

Weights: the shipped demo network (``listener/data/demo_resnet18.safetensors``)
unless ``--weights FILE``; ``--weights random`` = a seeded random ResNet18
whose BatchNorm statistics are estimated on spectrograms of
``../shared/data/train`` (no labels, no weight training; see
``tests/support/calibrated.py``), so scores spread over (0, 1).

``--emulate-bf16`` runs bfloat16 on a CPU without native support (refused by
the scorer otherwise): the same roundings (bf16 operands, float32
accumulation), many times slower; for decisions and errors only, never speed.

``--float32-stages`` (repeatable) compares choices of residual stages kept
float32 under bfloat16, side by side: ``layer1.0,layer4``, ``none``; without
it, the plan's default (every stage bf16). Each line gives the share of the
ResNet's multiply-adds that choice leaves in float32.

    python benchmarks/bench_precision.py [--weights W|random] [--emulate-bf16]
        [--max-files N] [--float32-stages STAGES ...] [--under DIR ...]
        [--labelled DIR ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT, cpu_model

sys.path.insert(0, str(ROOT / "tests"))  # the calibrated random network lives with the tests
from support.calibrated import save_calibrated

from listener.audio.decode import FileDecoder
from listener.config import Config, ModelConfig, StationConfig
from listener.model import precision as prec
from listener.model.dsp import downmix
from listener.model.frontend import Frontend
from listener.model.network import build_model, multiply_adds
from listener.model.scorer import Scorer
from listener.pipeline.files import FileResult, score_file

SHARED = ROOT.parent / "shared" / "data"


def calibration_features(n_files: int = 24) -> torch.Tensor:
    """Spectrograms of the first 2 s of some training files (calls and background)."""
    fe = Frontend()
    files = sorted((SHARED / "train").rglob("*.wav"))[::max(1, 216 // n_files)][:n_files]
    feats = []
    for f in files:
        dec = FileDecoder(f)
        audio = np.concatenate([downmix(b) for b in dec])
        rate = dec.sample_rate
        if audio.size >= rate:
            wave = fe.prepare_batch(audio[None, :2 * rate], rate)
            with torch.no_grad():
                feats.append(fe(torch.from_numpy(wave))[0])
    return torch.stack(feats)


def score_all(cfg: Config, files: list[Path],
              plan: prec.ExecutionPlan | None = None) -> list[FileResult]:
    scorer = Scorer(cfg.model, cfg.frontend, plan=plan)
    return [score_file(f, cfg, scorer.score_waves, scorer.frontend,
                       score_features=scorer.score_features) for f in files]


def label_of(path: Path) -> bool | None:
    """A clip's label from its folder: calls/positive -> True, nocalls/negative -> False."""
    for part in reversed(path.parts[:-1]):
        if part.lower() in ("calls", "positive", "positives"):
            return True
        if part.lower() in ("nocalls", "negative", "negatives"):
            return False
    return None


def compare(files: list[Path], ref: list[FileResult], got: list[FileResult],
            threshold: float) -> str:
    """Decisions first (per second, per clip, against labels), then the score error."""
    a = np.array([w.score for r in ref for w in r.windows])
    b = np.array([w.score for r in got for w in r.windows])
    d = np.abs(a - b)
    sec = int(np.sum((a > threshold) != (b > threshold)))
    near = int(np.sum(np.abs(a - threshold) < 0.05))
    ca = [c.detected for r in ref for c in r.clips]
    cb = [c.detected for r in got for c in r.clips]
    clip = sum(x != y for x, y in zip(ca, cb, strict=True))
    text = (f"DECISIONS: per-second flips {sec} of {len(a)} windows ({near} within 0.05 of "
            f"the threshold); per-clip flips {clip} of {len(ca)} clips ({sum(ca)} detected in "
            "float32)")
    labels = [label_of(f) for f in files]
    if any(x is not None for x in labels):
        def accuracy(results: list[FileResult]) -> str:
            pairs = [(lab, any(c.detected for c in r.clips))
                     for lab, r in zip(labels, results, strict=True) if lab is not None]
            return f"{sum(x == y for x, y in pairs)}/{len(pairs)}"
        text += f"; labelled files right: float32 {accuracy(ref)}, this {accuracy(got)}"
    return (f"{text}\n    SCORES: |diff| p50 {np.percentile(d, 50):.2e}  p99 "
            f"{np.percentile(d, 99):.2e}  max {d.max():.2e}")


def float32_share(stages: tuple[str, ...], input_shape: tuple[int, ...]) -> float:
    """Share of a ResNet18's multiply-adds that run float32 under bf16 with ``stages`` kept.

    The stem and the head always stay float32; ``stages`` adds whole stages
    (``layer1``) or blocks (``layer2.0``).
    """
    macs = multiply_adds(build_model("resnet18"), input_shape)
    kept = sum(v for k, v in macs.items() if not k.startswith("layer")
               or k.split(".")[0] in stages or ".".join(k.split(".")[:2]) in stages)
    return kept / sum(macs.values())


def variants(args: argparse.Namespace) -> list[tuple[str, str, tuple[str, ...] | None]]:
    """(device, precision, float32 stages or None for the plan's default) to compare."""
    out: list[tuple[str, str, tuple[str, ...] | None]] = []
    if torch.cuda.is_available():
        out.append(("cuda", "float16", None))
    if prec.cpu_has_native_bf16() or args.emulate_bf16:
        for spec in args.float32_stages or [None]:
            stages = None if spec is None else tuple(x for x in spec.split(",")
                                                    if x and x != "none")
            out.append(("cpu", "bfloat16", stages))
    return out


AUDIO = (".wav", ".mp3", ".ts", ".flac")
DEMO_WEIGHTS = ROOT / "listener" / "data" / "demo_resnet18.safetensors"


def file_sets(args: argparse.Namespace) -> list[tuple[str, list[Path]]]:
    """(name, files) of each set judged: the shared audio (or ``--under``), each labelled one."""
    if args.under:
        shared = sorted(f for d in args.under for f in (SHARED / d).rglob("*")
                        if f.suffix in AUDIO)
    else:
        shared = sorted((SHARED / "recordings").glob("*.wav"))
        shared += sorted((SHARED / "clips").rglob("*.mp3"))
        shared += sorted((SHARED / "hls").rglob("*.ts"))
    sets = [("shared " + ("+".join(args.under) or "recordings+clips+hls"), shared)]
    for folder in args.labelled:
        files = sorted(f for f in Path(folder).rglob("*") if f.suffix in AUDIO)
        if not any(label_of(f) is not None for f in files):
            raise SystemExit(f"--labelled {folder}: no audio under calls/ or nocalls/ "
                             "(positive/ or negative/)")
        sets.append((f"labelled {folder}", files))
    if args.max_files:
        sets = [(name, files[:args.max_files]) for name, files in sets]
    return sets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=str(DEMO_WEIGHTS),
                   help="checkpoint, or 'random' (calibrated seeded ResNet18)")
    p.add_argument("--emulate-bf16", action="store_true")
    p.add_argument("--max-files", type=int, default=0, help="0 = all (per set)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--under", action="append", default=[],
                   help="judge the audio files under this folder of ../shared/data instead "
                        "(repeatable; default: recordings, clips and hls), e.g. humpback")
    p.add_argument("--labelled", action="append", default=[],
                   help="a folder with calls/ and nocalls/ clips, judged too (repeatable)")
    p.add_argument("--float32-stages", action="append", default=[],
                   help="stages kept float32 under bf16, comma-separated ('none' = none); "
                        "repeat to compare")
    args = p.parse_args()
    out = sys.stdout.write
    sets = file_sets(args)
    out(f"{cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"native bf16: {prec.cpu_has_native_bf16()}; "
        + ", ".join(f"{name}: {len(files)} files" for name, files in sets) + "\n")
    precisions = variants(args)
    if args.emulate_bf16 and not prec.cpu_has_native_bf16():
        out("bfloat16 EMULATED on this CPU: decisions and errors only, never speed\n")
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(args.weights)
        if args.weights == "random":
            weights = save_calibrated(Path(tmp) / "r18.safetensors", calibration_features())
            out("weights: seeded random ResNet18, BatchNorm statistics from train/ spectrograms\n")
        else:
            out(f"weights: {weights}\n")
        base = Config(station=StationConfig(id="bench"),
                      model=ModelConfig(weights=weights, device="cpu", batch_size=args.batch,
                                        precision="float32"))
        t = time.perf_counter()
        refs = [score_all(base, files) for _, files in sets]
        out(f"float32 reference scored in {time.perf_counter() - t:.0f} s\n")
        shape = (1, 1, base.frontend.n_mels, base.frontend.frames)
        for device, name, stages in precisions:
            cfg = base.model_copy(update={"model": base.model.model_copy(
                update={"device": device, "precision": name})})
            # The plan decided here, so an emulated bf16 is not refused.
            plan = prec.plan_execution(name, device, native_bf16=True, float32_stages=stages)
            kept = ",".join(plan.float32_stages) or "none"
            out(f"{name} on {device}, float32 stages {kept} (ResNet18: "
                f"{100 * float32_share(plan.float32_stages, shape):.1f}% of multiply-adds "
                "float32):\n")
            for (set_name, files), ref in zip(sets, refs, strict=True):
                t = time.perf_counter()
                got = score_all(cfg, files, plan)
                out(f"  {set_name} ({time.perf_counter() - t:.0f} s): "
                    f"{compare(files, ref, got, base.detection.local_threshold)}\n")
    if not precisions:
        out("no reduced precision runs on this host (no native bf16, no CUDA); "
            "--emulate-bf16 judges bf16's decisions anyway\n")


if __name__ == "__main__":
    main()
