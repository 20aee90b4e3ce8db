"""Score whole files: decode -> windows -> frontend -> model -> clips.

Decoding (an ffmpeg process), the resampling of each batch of windows
(:meth:`Frontend.prepare_batch`) and, when the caller gives
``score_features``, the spectrograms too, run in a producer thread that stays
a few batches ahead, so the model's thread only runs the network; memory is
bounded by the queue, whatever the file's length.
"""

from __future__ import annotations

import logging
import queue
import re
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from listener.audio.decode import FileDecoder, file_url, find_ffmpeg
from listener.audio.level import window_levels_dbfs
from listener.audio.windows import Window, WindowCutter
from listener.config import Config
from listener.detection.rule import ClipAggregator, ClipResult, WindowScore
from listener.errors import DecodeError
from listener.model.frontend import Frontend
from listener.pipeline.contracts import Progress

log = logging.getLogger(__name__)

ScoreWaves = Callable[[np.ndarray], np.ndarray]  # (B, samples) 20 kHz -> (B,) scores
ScoreFeatures = Callable[[torch.Tensor], np.ndarray]  # (B, 1, mels, frames) -> (B,) scores


@dataclass
class FileResult:
    """Everything ``listener detect`` reports for one file."""

    file: str
    sample_rate: int
    duration_s: float
    windows: list[WindowScore] = field(default_factory=list)
    clips: list[ClipResult] = field(default_factory=list)
    levels_dbfs: list[float] = field(default_factory=list)  # per window, at the model's rate

    def to_json(self, model_info: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "file": self.file,
            "sample_rate": self.sample_rate,
            "duration_s": round(self.duration_s, 6),
            "model": dict(model_info),
            "windows": [{"start_s": round(w.start_s, 6), "end_s": round(w.end_s, 6),
                         "score": w.score, "level_dbfs": round(level, 1)}
                        for w, level in zip(self.windows, self.levels_dbfs, strict=True)],
            "clips": [clip_json(c) for c in self.clips],
        }


def clip_json(clip: ClipResult) -> dict[str, Any]:
    """The JSON form of one clip decision (shared by detect, events and replay)."""
    return {
        "start_s": round(clip.start_s, 6),
        "end_s": round(clip.end_s, 6),
        "seconds": [{"start_s": s.start_s, "score": s.score, "positive": s.positive}
                    for s in clip.seconds],
        "detected": clip.detected,
        "confidence": clip.confidence,
    }


def probe_duration(path: str, ffmpeg_exe: str) -> float | None:
    """The container's duration from ffmpeg's banner, for the progress bar only."""
    try:
        res = subprocess.run([ffmpeg_exe, "-hide_banner", "-nostdin", "-i", file_url(path)],
                             capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(rb"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", res.stderr)
    if not m:
        return None
    h, mnt, sec = int(m[1]), int(m[2]), float(m[3])
    return h * 3600 + mnt * 60 + sec


_END = object()


class _Batch:
    """Windows and their model input: 20 kHz waves, or features when ``featurize``."""

    def __init__(self, windows: list[Window], data: np.ndarray | torch.Tensor,
                 levels: np.ndarray) -> None:
        self.windows = windows
        self.data = data
        self.levels = levels


def _batch(windows: list[Window], frontend: Frontend, featurize: bool) -> _Batch:
    """Resample a batch (one rate: one decoder) and, if asked, make its spectrograms."""
    waves = frontend.prepare_batch([w.samples for w in windows], windows[0].sample_rate)
    if waves.shape[-1] < frontend.min_samples:
        need = frontend.min_samples / frontend.cfg.sample_rate
        raise ValueError(f"too short to score: {windows[0].end_s - windows[0].start_s:.3f} s "
                         f"of audio (the spectrogram needs at least {need:.3f} s)")
    levels = window_levels_dbfs(waves)
    if not featurize:
        return _Batch(windows, waves, levels)
    with torch.inference_mode():
        return _Batch(windows, frontend(torch.from_numpy(waves)), levels)


def _produce(decoder: FileDecoder, cutter: WindowCutter, frontend: Frontend,
             batch_size: int, featurize: bool, out: queue.Queue[Any],
             stop: threading.Event) -> None:
    """Producer thread: decode, cut, prepare; puts _Batch, then _END or an exception."""
    try:
        pending: list[Window] = []
        started = False
        for block in decoder:
            if not started:
                cutter.reset(0.0, decoder.sample_rate, None)
                started = True
            for w in cutter.push(block):
                pending.append(w)
                if len(pending) == batch_size:
                    out.put(_batch(pending, frontend, featurize))
                    pending = []
            if stop.is_set():
                return
        if pending:
            out.put(_batch(pending, frontend, featurize))
        elif started and cutter.position_s < cutter.window_s:
            # A file shorter than one window: score it whole, padded like fastai.
            tail = cutter.tail()
            if tail is not None and tail.samples.size:
                try:
                    out.put(_batch([tail], frontend, featurize))
                except ValueError as err:
                    raise DecodeError(decoder.path, str(err)) from err
        out.put(_END)
    except BaseException as err:  # forwarded to the consumer, which re-raises it
        out.put(err)


def iter_scored_windows(path: str | Path, cfg: Config, score: ScoreWaves,
                        frontend: Frontend, decoder: FileDecoder, batch_size: int, *,
                        score_features: ScoreFeatures | None = None
                        ) -> Iterator[tuple[WindowScore, float]]:
    """Yield each window's score and level (dBFS, at the model's rate) in order; raises
    DecodeError for a bad file.

    With ``score_features`` (e.g. :meth:`Scorer.score_features`) the whole
    frontend runs in the producer thread and ``score`` is not called; without
    it, ``score`` gets each batch of 20 kHz waves.
    """
    cutter = WindowCutter(cfg.detection.window_s, cfg.detection.hop_s)
    q: queue.Queue[Any] = queue.Queue(maxsize=4)
    stop = threading.Event()
    featurize = score_features is not None
    worker = threading.Thread(target=_produce, args=(decoder, cutter, frontend, batch_size,
                                                     featurize, q, stop),
                              name="decode", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                if cutter.nonfinite_samples:  # counted by the producer before _END
                    log.warning("%s: %d NaN or infinite samples, scored as 0", path,
                                cutter.nonfinite_samples)
                return
            if isinstance(item, BaseException):
                raise item
            scores = score_features(item.data) if score_features else score(item.data)
            for w, s, level in zip(item.windows, scores, item.levels, strict=True):
                yield WindowScore(w.start_s, w.end_s, float(s), w.utc), float(level)
    finally:
        stop.set()
        while worker.is_alive():
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass


def score_file(path: str | Path, cfg: Config, score: ScoreWaves, frontend: Frontend,
               progress: Progress | None = None, *,
               score_features: ScoreFeatures | None = None) -> FileResult:
    """Score every window of a file and apply the decision rule per clip.

    ``score_features`` moves the spectrograms off the model's thread (see
    :func:`iter_scored_windows`); ``listener detect`` passes it.
    """
    ffmpeg_exe = find_ffmpeg()
    decoder = FileDecoder(path, ffmpeg_exe=ffmpeg_exe)
    total = probe_duration(str(path), ffmpeg_exe) if progress else None
    aggregator = ClipAggregator(cfg.detection)
    result = FileResult(str(path), 0, 0.0)
    for w, level in iter_scored_windows(path, cfg, score, frontend, decoder,
                                        cfg.model.batch_size, score_features=score_features):
        result.windows.append(w)
        result.levels_dbfs.append(level)
        result.clips.extend(aggregator.add(w))
        if progress:
            progress(w.end_s, total)
    result.sample_rate = decoder.sample_rate
    result.duration_s = decoder.duration_s
    result.clips.extend(aggregator.flush(result.duration_s))
    if not result.windows:
        result.clips = []
    if progress:
        progress(result.duration_s, result.duration_s)
    return result
