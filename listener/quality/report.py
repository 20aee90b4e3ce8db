"""Figures for one model: metrics with bootstrap intervals, the threshold pair, sites."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from listener.config import DetectionConfig
from listener.quality.evaluate import ScoredClips, ScoredWindows, rule_detects
from listener.quality.metrics import average_precision, bootstrap_ci, confusion, roc_auc

LOCAL_GRID = tuple(round(x, 2) for x in np.arange(0.05, 0.96, 0.05))


def _groups(groups: np.ndarray) -> list[np.ndarray]:
    return [np.flatnonzero(groups == g) for g in np.unique(groups)]


def _with_ci(fn: Callable[[np.ndarray], float], n_items: int, groups: list[np.ndarray],
             n_boot: int, seed: int) -> dict[str, Any]:
    value = fn(np.arange(n_items))
    lo, hi = bootstrap_ci(fn, groups, n_boot, seed) if n_items else (float("nan"),) * 2
    return {"value": _num(value), "ci95": [_num(lo), _num(hi)]}


def _num(x: float) -> float | None:
    return None if x is None or np.isnan(x) else round(float(x), 4)


def curve_metrics(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                  predicted: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """ROC-AUC, PR-AUC and P/R/F1 of ``predicted``, each with a 95 % interval."""
    gs = _groups(groups)
    n = len(scores)
    out: dict[str, Any] = {"n": n, "positives": int(labels.sum()),
                           "negatives": int(n - labels.sum())}
    out["roc_auc"] = _with_ci(lambda i: roc_auc(labels[i], scores[i]), n, gs, n_boot, seed)
    out["pr_auc"] = _with_ci(lambda i: average_precision(labels[i], scores[i]), n, gs,
                             n_boot, seed)
    out["confusion"] = confusion(labels, predicted).to_json()
    for name in ("precision", "recall", "f1"):
        out[name] = _with_ci(_rate(labels, predicted, name), n, gs, n_boot, seed)
    return out


def _rate(labels: np.ndarray, predicted: np.ndarray,
          name: str) -> Callable[[np.ndarray], float]:
    def fn(i: np.ndarray) -> float:
        return float(getattr(confusion(labels[i], predicted[i]), name)) if len(i) else np.nan
    return fn


def threshold_pair(clips: ScoredClips, target: str, value: float,
                   max_global: int | None = None) -> dict[str, Any]:
    """The (local, global) pair reaching ``precision >= value`` (best recall) or
    ``recall >= value`` (best precision), over clips.

    Ties go to the higher local threshold (fewer false alarms for the same
    figures). ``reachable: false`` when no pair gets there.
    """
    longest = max((u.size for u in clips.units), default=1)
    best: tuple[float, float, float, int] | None = None
    for local in LOCAL_GRID:
        for glob in range(1, (max_global or longest) + 1):
            counts = confusion(clips.labels, rule_detects(clips.units, local, glob))
            p, r = counts.precision, counts.recall
            ok = p >= value and counts.tp > 0 if target == "precision" else r >= value
            if not ok:
                continue
            key = (r, p, local, -glob) if target == "precision" else (p, r, local, -glob)
            if best is None or key > best:
                best = key
    if best is None:
        return {"target": target, "value": value, "reachable": False}
    local, glob = best[2], -best[3]
    counts = confusion(clips.labels, rule_detects(clips.units, local, glob))
    return {"target": target, "value": value, "reachable": True, "local_threshold": local,
            "global_threshold": glob, "precision": round(counts.precision, 4),
            "recall": round(counts.recall, 4), "confusion": counts.to_json()}


def model_report(windows: ScoredWindows, clips: ScoredClips, det: DetectionConfig,
                 target: tuple[str, float] | None, n_boot: int, seed: int) -> dict[str, Any]:
    """Everything ``listener evaluate`` writes for one model."""
    out: dict[str, Any] = {
        "thresholds": {"local": det.local_threshold, "global": det.global_threshold},
        "windows": curve_metrics(windows.scores, windows.labels, windows.groups,
                                 windows.scores > det.local_threshold, n_boot, seed),
        "clips": curve_metrics(clips.scores, clips.labels, clips.groups, clips.detected,
                               n_boot, seed),
    }
    if target is not None and len(clips.labels):
        out["recommended"] = threshold_pair(clips, *target)
    sites = sorted({s for s in clips.sites if s})
    if sites:
        out["sites"] = {}
        for site in sites:
            idx = np.asarray([s == site for s in clips.sites])
            out["sites"][site] = curve_metrics(clips.scores[idx], clips.labels[idx],
                                               clips.groups[idx], clips.detected[idx],
                                               min(n_boot, 200), seed)
    return out


def _fmt(m: dict[str, Any]) -> str:
    v, (lo, hi) = m["value"], m["ci95"]
    if v is None:
        return "n/a"
    return f"{v:.3f} [{lo:.3f}-{hi:.3f}]" if lo is not None else f"{v:.3f}"


def summary_lines(name: str, rep: dict[str, Any]) -> list[str]:
    """A few human lines for one model (the JSON holds the rest)."""
    th = rep["thresholds"]
    lines = [f"{name}"]
    for level in ("windows", "clips"):
        m = rep[level]
        c = m["confusion"]
        rule = (f"local {th['local']}" if level == "windows"
                else f"rule local {th['local']}, global {th['global']}")
        lines.append(f"  {level}: n={m['n']} ({m['positives']} calls)  ROC-AUC "
                     f"{_fmt(m['roc_auc'])}  PR-AUC {_fmt(m['pr_auc'])}")
        lines.append(f"    at {rule}: precision {_fmt(m['precision'])} recall "
                     f"{_fmt(m['recall'])} F1 {_fmt(m['f1'])}  (tp {c['tp']} fp {c['fp']} "
                     f"tn {c['tn']} fn {c['fn']})")
    rec = rep.get("recommended")
    if rec:
        if rec["reachable"]:
            lines.append(f"  for {rec['target']} >= {rec['value']}: local_threshold "
                         f"{rec['local_threshold']}, global_threshold {rec['global_threshold']} "
                         f"-> precision {rec['precision']:.3f} recall {rec['recall']:.3f}")
        else:
            lines.append(f"  {rec['target']} >= {rec['value']} is not reachable on these clips "
                         "with any (local, global) pair")
    for site, m in rep.get("sites", {}).items():
        lines.append(f"  site {site}: {m['n']} clips, PR-AUC {_fmt(m['pr_auc'])}, precision "
                     f"{_fmt(m['precision'])}, recall {_fmt(m['recall'])}")
    return lines
