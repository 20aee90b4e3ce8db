"""Score one file with several models: decoded once, fanned out to each model's windows.

Each model keeps its own window grid (length, hop), its own rate (its
backend's ``prepare_batch``, once per batch) and its own batches; the decoded
blocks are shared, so ffmpeg runs once whatever the number of models. The
results line up on the station's clip grid (``detection.clip_s``), which
:func:`agreement` compares model against model.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from listener.audio.decode import FileDecoder, find_ffmpeg
from listener.audio.level import window_levels_dbfs
from listener.audio.windows import Window, WindowCutter
from listener.detection.labels import LabelledAggregator, LabelledClip, LabelledWindow, LabelRule
from listener.errors import DecodeError
from listener.model.backends.base import ModelBackend, ModelPlan
from listener.pipeline.prepare import prepare_windows


@dataclass
class ModelRun:
    """One model's state while a file is scored."""

    plan: ModelPlan
    backend: ModelBackend
    aggregator: LabelledAggregator
    cutter: WindowCutter
    batch: list[Window] = field(default_factory=list)
    windows: list[LabelledWindow] = field(default_factory=list)
    clips: list[LabelledClip] = field(default_factory=list)
    levels_dbfs: list[float] = field(default_factory=list)  # per window, at the model's rate
    model_s: float = 0.0

    def push(self, block: np.ndarray, batch_size: int) -> None:
        for w in self.cutter.push(block):
            self.batch.append(w)
            if len(self.batch) >= batch_size:
                self.score()

    def score(self) -> None:
        if not self.batch:
            return
        # The whole batch resampled in one call per rate (bit for bit per window).
        waves = np.stack(prepare_windows(self.backend.prepare_batch, self.batch))
        t0 = time.process_time()
        probs = self.backend.predict(waves)
        self.model_s += time.process_time() - t0
        self.levels_dbfs.extend(float(v) for v in window_levels_dbfs(waves))
        for w, p in zip(self.batch, probs, strict=True):
            lw = LabelledWindow(w.start_s, w.end_s, tuple(float(x) for x in p), w.utc)
            self.windows.append(lw)
            self.clips.extend(self.aggregator.add(lw))
        self.batch = []


@dataclass
class MultiFileResult:
    """Every model's windows and clips for one file, plus what decoding cost."""

    file: str
    sample_rate: int
    duration_s: float
    runs: list[ModelRun]
    decode_cpu_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file, "sample_rate": self.sample_rate,
            "duration_s": round(self.duration_s, 6),
            "models": [{**r.plan.describe(), "info": dict(r.backend.info),
                        "windows": [{"start_s": round(w.start_s, 6), "end_s": round(w.end_s, 6),
                                     "probs": dict(zip(r.plan.labels, w.probs, strict=True)),
                                     "level_dbfs": round(level, 1)}
                                    for w, level in zip(r.windows, r.levels_dbfs, strict=True)],
                        "clips": [labelled_clip_json(c) for c in r.clips]}
                       for r in self.runs],
            "agreement": [p.to_json() for p in agreement(self)],
        }


def labelled_clip_json(c: LabelledClip) -> dict[str, Any]:
    return {"start_s": round(c.clip.start_s, 6), "end_s": round(c.clip.end_s, 6),
            "detected": c.clip.detected, "confidence": c.clip.confidence,
            "label": c.labels.label, "comments": c.labels.comments}


def score_file_models(path: str | Path, plans: Sequence[ModelPlan],
                      backends: Sequence[ModelBackend], clip_s: float) -> MultiFileResult:
    """Decode ``path`` once and score it with every backend on its own windows."""
    decoder = FileDecoder(path, ffmpeg_exe=find_ffmpeg())
    runs = [ModelRun(p, b, LabelledAggregator(
        LabelRule(p.labels, p.targets, p.rule, b.window_s, b.hop_s, clip_s), p.id),
        WindowCutter(b.window_s, b.hop_s)) for p, b in zip(plans, backends, strict=True)]
    blocks = iter(decoder)
    decode_cpu = 0.0
    started = False
    while True:
        t0 = time.process_time()
        block = next(blocks, None)
        decode_cpu += time.process_time() - t0
        if block is None:
            break
        if not started:
            for r in runs:
                r.cutter.reset(0.0, decoder.sample_rate, None)
            started = True
        for r in runs:
            r.push(block, r.plan.entry.batch_size)
    for r in runs:
        r.score()
        if not r.windows and started:
            _score_tail(r, str(path))
        r.clips.extend(r.aggregator.flush(decoder.duration_s))
    return MultiFileResult(str(path), decoder.sample_rate, decoder.duration_s, runs, decode_cpu)


def _score_tail(run: ModelRun, path: str) -> None:
    """A file shorter than a model's window: score what there is, as ``detect`` does."""
    tail = run.cutter.tail()
    if tail is None or not tail.samples.size:
        return
    need = getattr(run.backend, "min_samples", 1)
    if run.backend.prepare(tail.samples, tail.sample_rate).size < need:
        raise DecodeError(path, f"too short for model {run.plan.id}: {tail.end_s:.3f} s of audio")
    run.batch = [tail]
    run.score()


@dataclass(frozen=True)
class PairAgreement:
    """How often two models agreed on "detection or not" over the same clips."""

    a: str
    b: str
    both: int
    only_a: int
    only_b: int
    neither: int

    @property
    def clips(self) -> int:
        return self.both + self.only_a + self.only_b + self.neither

    @property
    def rate(self) -> float:
        return (self.both + self.neither) / self.clips if self.clips else 1.0

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "both": self.both, "only_a": self.only_a,
                "only_b": self.only_b, "neither": self.neither, "agreement": self.rate}


def clip_grid(result: MultiFileResult) -> list[tuple[float, dict[str, LabelledClip]]]:
    """Clips by start time: ``[(start_s, {model id: clip})]`` in time order."""
    grid: dict[float, dict[str, LabelledClip]] = {}
    for r in result.runs:
        for c in r.clips:
            grid.setdefault(round(c.clip.start_s, 6), {})[r.plan.id] = c
    return sorted(grid.items())


def agreement(result: MultiFileResult) -> list[PairAgreement]:
    """Per model pair, over the clips both decided: both fired, one only, neither."""
    grid = clip_grid(result)
    out = []
    for a, b in itertools.combinations([r.plan.id for r in result.runs], 2):
        counts = {"both": 0, "only_a": 0, "only_b": 0, "neither": 0}
        for _, clips in grid:
            if a not in clips or b not in clips:
                continue
            fa, fb = clips[a].clip.detected, clips[b].clip.detected
            key = "both" if fa and fb else "only_a" if fa else "only_b" if fb else "neither"
            counts[key] += 1
        out.append(PairAgreement(a, b, **counts))
    return out
