"""One ``listener evaluate`` run: score every model, report, plot, tabulate, compare.

Models come from ``--weights`` (each a ResNet checkpoint, scored with the
config's frontend and rule) or, without ``--weights``, from the config's
``models:`` list (every backend, transformers included, each with its own
windows and rule). Multi-class models also get figures per label (each
label's probability taken as a call detector).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from listener.audio.level import LevelRange
from listener.config import Config, DetectionConfig
from listener.detection.rule import WindowScore
from listener.errors import ListenerError
from listener.model.lineage import digest, read_lineage
from listener.quality import plots
from listener.quality.evaluate import (
    FileScores,
    ScoredClips,
    ScoredWindows,
    check_selections,
    collect_clips,
    collect_windows,
    score_items,
    window_label,
)
from listener.quality.labels import LabelledAudio, LabelProblem
from listener.quality.report import curve_metrics, model_report

log = logging.getLogger(__name__)

MIN_BOOTSTRAP_FILES = 5


@dataclass
class ModelScores:
    """One model's scored windows and clips over the data set."""

    name: str
    files: list[FileScores]
    info: dict[str, Any]
    det: DetectionConfig
    per_label: dict[str, list[tuple[float, float, float, LabelledAudio]]] = field(
        default_factory=dict)  # label -> (start, end, prob, item) per window
    weights: str | None = None  # the checkpoint file or folder, if the model has one


def score_weights(k: int, weights: str, cfg: Config, items: list[LabelledAudio],
                  problems: list[LabelProblem]) -> ModelScores:
    from listener.model.bundled import with_weights
    from listener.model.scorer import Scorer

    # The model id is the one the checkpoint declares unless the config sets it.
    mcfg = with_weights(cfg, Path(weights))
    scorer = Scorer(mcfg.model, mcfg.frontend)
    files = score_items(items, mcfg, scorer, problems)
    return ModelScores(f"{k + 1}:{Path(weights).name}", files, scorer.info.to_dict(),
                       cfg.detection, weights=weights)


def score_config_models(cfg: Config, items: list[LabelledAudio],
                        problems: list[LabelProblem]) -> list[ModelScores]:
    """Every model of the config, each file decoded once for all of them."""
    from listener.detection.labels import LabelRule
    from listener.model.backends import load_backend
    from listener.model.backends.check import plan_models
    from listener.pipeline.multi import score_file_models

    plans = plan_models(cfg)
    backends = [load_backend(p, cfg.frontend) for p in plans]
    out = []
    for k, (p, b) in enumerate(zip(plans, backends, strict=True)):
        det = cfg.detection.model_copy(update={
            "local_threshold": p.rule.local_threshold,
            "global_threshold": p.rule.global_threshold,
            "window_s": b.window_s, "hop_s": b.hop_s})
        out.append(ModelScores(f"{k + 1}:{p.id}", [], {**p.describe(), **dict(b.info)}, det,
                               weights=None if p.weights is None else str(p.weights)))
    for item in items:
        try:
            res = score_file_models(item.path, plans, backends, cfg.detection.clip_s)
        except ListenerError as err:
            problems.append(LabelProblem(str(item.path), None, str(err).splitlines()[0]))
            continue
        if item.label is None:
            problems.extend(check_selections(item, res.duration_s))
        for ms, run in zip(out, res.runs, strict=True):
            rule = LabelRule(run.plan.labels, run.plan.targets, run.plan.rule,
                             run.backend.window_s, run.backend.hop_s, cfg.detection.clip_s)
            windows = [rule.score_window(w) for w in run.windows]
            ms.files.append(FileScores(item, windows, [c.clip for c in run.clips],
                                       run.levels_dbfs))
            if len(run.plan.labels) > 1:
                for j, label in enumerate(run.plan.labels):
                    ms.per_label.setdefault(label, []).extend(
                        (w.start_s, w.end_s, w.probs[j], item) for w in run.windows)
    return out


def short_call_clips(files: list[FileScores], det: DetectionConfig,
                     ) -> tuple[list[FileScores], list[dict[str, Any]]]:
    """Call clips shorter than ``global_threshold`` units can never be detected: set apart."""
    need_s = det.global_threshold * det.hop_s
    kept, apart = [], []
    for f in files:
        clips = []
        for c in f.clips:
            if f.item.label and c.end_s - c.start_s < need_s - 1e-9:
                apart.append({"file": str(f.item.path), "start_s": round(c.start_s, 3),
                              "duration_s": round(c.end_s - c.start_s, 3),
                              "max_score": round(max((w.score for w in c.windows),
                                                     default=float("nan")), 4)})
            else:
                clips.append(c)
        kept.append(FileScores(f.item, f.windows, clips, f.levels_dbfs))
    return kept, apart


def per_label_report(ms: ModelScores, n_boot: int, seed: int) -> dict[str, Any]:
    out = {}
    groups = {id(item): g for g, item in enumerate({id(f.item): f.item for f in ms.files}
                                                    .values())}
    for label, rows in ms.per_label.items():
        scores, labels, gs = [], [], []
        for start, end, prob, item in rows:
            y = (int(item.label) if item.label is not None
                 else window_label(WindowScore(start, end, prob), item.selections))
            if y is None or item.kind == "orcahello":
                continue
            scores.append(prob)
            labels.append(y)
            gs.append(groups.get(id(item), 0))
        s, y_, g = (np.asarray(scores), np.asarray(labels, dtype=np.int64),
                    np.asarray(gs, dtype=np.int64))
        out[label] = {"curve": plots.Curve(f"{ms.name} {label}", y_, s),
                      "metrics": curve_metrics(s, y_, g, s > ms.det.local_threshold,
                                               min(n_boot, 200), seed)}
    return out


def write_table(path: Path, models: list[tuple[str, list[FileScores]]]) -> None:
    """Per-window and per-clip rows: model, file, level, start, end, label, score, decision."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["model", "file", "level", "start_s", "end_s", "label", "score",
                      "decision", "level_dbfs"])
        for name, files in models:
            for f in files:
                _rows(out, name, f)


def _rows(out: Any, name: str, f: FileScores) -> None:
    from listener.quality.evaluate import clip_label
    for w, level in zip(f.windows, f.levels_dbfs, strict=True):
        y = (int(f.item.label) if f.item.label is not None
             else window_label(w, f.item.selections))
        out.writerow([name, str(f.item.path), "window", f"{w.start_s:.3f}", f"{w.end_s:.3f}",
                      "" if y is None or f.item.kind == "orcahello" else y,
                      f"{w.score:.6f}", "", f"{level:.1f}"])
    for c in f.clips:
        y = int(f.item.label) if f.item.label is not None else clip_label(c, f.item.selections)
        score = max((w.score for w in c.windows), default=float("nan"))
        out.writerow([name, str(f.item.path), "clip", f"{c.start_s:.3f}", f"{c.end_s:.3f}", y,
                      f"{score:.6f}", int(c.detected), ""])


def bootstrap_warning(files: list[FileScores]) -> str | None:
    n = len({str(f.item.path) for f in files})
    if n < MIN_BOOTSTRAP_FILES:
        return (f"only {n} source file(s) feed the bootstrap (whole files are resampled): "
                f"the 95% intervals are unreliable; label at least {MIN_BOOTSTRAP_FILES}")
    return None


def levels_warning(ms: ModelScores) -> str | None:
    """A warning when many windows lie outside the levels the model trained at."""
    trained = LevelRange.of_weights(ms.name, ms.weights)
    if trained is None:
        return None
    return trained.outside_note([v for f in ms.files for v in f.levels_dbfs])


def trained_on_warning(ms: ModelScores, items: list[LabelledAudio]) -> str | None:
    """A warning when some evaluated files trained the model (its lineage metadata says so)."""
    if ms.weights is None:
        return None
    try:
        lineage = read_lineage(ms.weights)
    except ListenerError as err:
        return f"{ms.name}: {err}"
    if not lineage.digests:
        return None
    seen = [it.path for it in items if it.path.is_file() and digest(it.path) in lineage.digests]
    if not seen:
        return None
    return (f"{ms.name}: {len(seen)} of the {len(items)} evaluated files trained it (e.g. "
            f"{seen[0]}): its figures here are optimistic; evaluate on audio it never saw")


def report_model(ms: ModelScores, target: tuple[str, float] | None, n_boot: int,
                 seed: int) -> tuple[dict[str, Any], ScoredWindows, ScoredClips]:
    files, apart = short_call_clips(ms.files, ms.det)
    windows, clips = collect_windows(files), collect_clips(files, ms.det)
    rep = model_report(windows, clips, ms.det, target, n_boot, seed)
    rep["model"] = ms.info
    if apart:
        rep["short_call_clips"] = apart
    return rep, windows, clips


def promote_line(current: tuple[str, dict[str, Any]], new: tuple[str, dict[str, Any]]) -> str:
    """A short verdict: does ``new`` beat ``current`` on these data?

    Promote when the new model gains on PR-AUC (clips, or windows where clips
    lack a class), precision or recall at its rule, and loses on none of them:
    two models that both rank perfectly differ only in their decisions.
    When the two PR-AUC intervals overlap the gain is not yet certain, so the
    line says to run it as a shadow first.
    """
    level = "clips" if current[1]["clips"]["pr_auc"]["value"] is not None else "windows"
    a, b = current[1][level], new[1][level]
    if a["pr_auc"]["value"] is None or b["pr_auc"]["value"] is None:
        return f"promote {new[0]}? cannot tell: these data lack calls or no-calls"

    def v(m: dict[str, Any], k: str) -> float:
        return float(m[k]["value"]) if m[k]["value"] is not None else 0.0
    keys = ("pr_auc", "precision", "recall")
    better = any(v(b, k) > v(a, k) for k in keys)
    no_loss = all(v(b, k) >= v(a, k) for k in keys)
    lo_b, hi_a = b["pr_auc"]["ci95"][0], a["pr_auc"]["ci95"][1]
    sure = lo_b is not None and hi_a is not None and lo_b > hi_a
    figures = (f"{level} PR-AUC {v(a, 'pr_auc'):.2f} -> {v(b, 'pr_auc'):.2f}, precision "
               f"{v(a, 'precision'):.2f} -> {v(b, 'precision'):.2f}, recall "
               f"{v(a, 'recall'):.2f} -> {v(b, 'recall'):.2f} at each model's rule")
    if better and no_loss:
        how = ("" if sure else "; intervals overlap: run it as a shadow, then secondary, "
               "before primary")
        return f"promote {new[0]} over {current[0]}: yes ({figures}{how})"
    return f"promote {new[0]} over {current[0]}: no, keep the current model ({figures})"
