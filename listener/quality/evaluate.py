"""Score labelled audio with the daemon's own path and line scores up with labels.

Each recording goes through :func:`listener.pipeline.files.score_file` (ffmpeg
decode, the window cutter, :class:`~listener.model.frontend.Frontend`, the
:class:`~listener.model.scorer.Scorer`, the decision rule's clip aggregator),
exactly as ``listener detect`` and the daemon score audio. What is added here
is only the bookkeeping of which windows and clips are calls.

Window labels:

* whole-file labels from clip folders: every window of the file has the
  file's label (a 3 s clip has two windows);
* selections (Raven, Audacity): a window is a call when it overlaps a call
  selection by at least ``min(min_overlap_s, the selection's length)``, not
  a call when it overlaps none, and is left out in between;
* OrcaHello moderator records label the clip, not its windows, so they count
  only at clip level.

Clip labels: a file's label, or "some call selection overlaps this clip".
A clip's score for ROC/PR curves is its highest window score.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from listener.config import Config, DetectionConfig
from listener.detection.rule import ClipResult, WindowScore
from listener.errors import ListenerError
from listener.model.scorer import Scorer
from listener.pipeline.files import score_file
from listener.quality.labels import LabelledAudio, LabelProblem, Selection

log = logging.getLogger(__name__)

MIN_OVERLAP_S = 0.5


@dataclass
class ScoredWindows:
    """Labelled windows of one model over the whole data set."""

    scores: np.ndarray  # (n,) float64
    labels: np.ndarray  # (n,) int64
    groups: np.ndarray  # (n,) int64, the index of the source file


@dataclass
class ScoredClips:
    """Labelled clips; ``units`` are per-second scores (NaN where no window covered)."""

    scores: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    units: list[np.ndarray]
    detected: np.ndarray  # bool, the rule at the configured thresholds
    sites: list[str | None]


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def window_label(w: WindowScore, sels: list[Selection]) -> int | None:
    """1, 0, or ``None`` (ambiguous: touches a call too little to say)."""
    best = 0.0
    need = MIN_OVERLAP_S
    for s in sels:
        if not s.positive:
            continue
        ov = _overlap(w.start_s, w.end_s, s.start_s, s.end_s)
        if ov > best:
            best, need = ov, min(MIN_OVERLAP_S, s.end_s - s.start_s)
    if best <= 0:
        return 0
    return 1 if best >= need - 1e-9 else None


def clip_label(clip: ClipResult, sels: list[Selection]) -> int:
    return int(any(s.positive and _overlap(clip.start_s, clip.end_s, s.start_s, s.end_s)
                   >= min(MIN_OVERLAP_S, s.end_s - s.start_s) - 1e-9 for s in sels))


def check_selections(item: LabelledAudio, duration_s: float) -> list[LabelProblem]:
    """Drop selections past the end of the recording (reported, file and line)."""
    problems = []
    kept = []
    for s in item.selections:
        if s.start_s >= duration_s:
            problems.append(LabelProblem(item.source, s.line, f"selection {s.start_s:g}.."
                                         f"{s.end_s:g} s starts past the end of {item.path.name} "
                                         f"({duration_s:.3f} s); skipped"))
        else:
            if s.end_s > duration_s + 0.05:
                problems.append(LabelProblem(item.source, s.line, f"selection ends at "
                                             f"{s.end_s:g} s, past the end of {item.path.name} "
                                             f"({duration_s:.3f} s); clipped"))
            kept.append(s)
    item.selections = kept
    return problems


@dataclass
class FileScores:
    item: LabelledAudio
    windows: list[WindowScore]
    clips: list[ClipResult]
    levels_dbfs: list[float]  # per window: dBFS at the model's rate


def score_items(items: list[LabelledAudio], cfg: Config, scorer: Scorer,
                problems: list[LabelProblem],
                progress: Callable[[int, int], None] | None = None) -> list[FileScores]:
    """Score every recording; undecodable or missing ones become problems and are skipped."""
    out = []
    for i, item in enumerate(items):
        try:
            res = score_file(item.path, cfg, scorer.score_waves, scorer.frontend)
        except ListenerError as err:
            problems.append(LabelProblem(str(item.path), None, str(err).splitlines()[0]))
            continue
        if item.label is None:
            problems.extend(check_selections(item, res.duration_s))
        out.append(FileScores(item, res.windows, res.clips, res.levels_dbfs))
        if progress:
            progress(i + 1, len(items))
    return out


def collect_windows(files: list[FileScores]) -> ScoredWindows:
    scores, labels, groups = [], [], []
    for g, f in enumerate(files):
        if f.item.kind == "orcahello":
            continue
        for w in f.windows:
            label = int(f.item.label) if f.item.label is not None else window_label(
                w, f.item.selections)
            if label is None:
                continue
            scores.append(w.score)
            labels.append(label)
            groups.append(g)
    return ScoredWindows(np.asarray(scores, dtype=np.float64),
                         np.asarray(labels, dtype=np.int64), np.asarray(groups, dtype=np.int64))


def collect_clips(files: list[FileScores], det: DetectionConfig) -> ScoredClips:
    scores, labels, groups, units, detected, sites = [], [], [], [], [], []
    for g, f in enumerate(files):
        for c in f.clips:
            if not c.windows:
                continue
            label = int(f.item.label) if f.item.label is not None else clip_label(
                c, f.item.selections)
            scores.append(max(w.score for w in c.windows))
            labels.append(label)
            groups.append(g)
            units.append(np.asarray([np.nan if s.score is None else s.score
                                     for s in c.seconds], dtype=np.float64))
            detected.append(c.detected)
            sites.append(f.item.site)
    return ScoredClips(np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64),
                       np.asarray(groups, dtype=np.int64), units,
                       np.asarray(detected, dtype=bool), sites)


def rule_detects(units: list[np.ndarray], local: float, global_: int) -> np.ndarray:
    """The decision rule on stored per-second scores, at other thresholds."""
    return np.asarray([int(np.sum(np.nan_to_num(u, nan=-1.0) > local)) >= global_
                       for u in units], dtype=bool)
