"""The analyst's plots of ``listener evaluate``, drawn with matplotlib (``listener[plots]``).

Every figure has a title, labelled axes and a legend, one line per model:

* ``roc_<level>.png``: ROC curves with the no-skill diagonal, AUC in the legend;
* ``pr_<level>.png``: precision-recall curves with the no-skill line (the
  share of calls), PR-AUC in the legend;
* ``threshold_<level>.png``: precision (solid) and recall (dashed) against
  the threshold;
* ``histogram_<level>_<k>.png``: score histograms of calls and no-calls for
  model ``k``, the configured threshold marked.

matplotlib is optional: :func:`available` says whether it is installed, and
the CLI then writes only the JSON and CSV and names the extra to install.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from listener.quality.metrics import average_precision, roc_auc

EXTRA = "pip install 'listener[plots]'"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Curve:
    """One model's labelled scores at one level (windows or clips)."""

    name: str
    labels: np.ndarray
    scores: np.ndarray

    @property
    def usable(self) -> bool:
        return bool(self.labels.size) and 0 < int(self.labels.sum()) < self.labels.size


def _pyplot() -> Any:
    import matplotlib
    matplotlib.use("Agg", force=True)  # files only; never a window
    import matplotlib.pyplot as plt
    return plt


def _finish(fig: Any, ax: Any, path: Path, title: str, xlabel: str, ylabel: str,
            curves: list[Curve]) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    if not any(c.usable for c in curves):  # an empty frame would read as a broken plot
        ax.text(0.5, 0.5, "no curve: these need both calls and no-calls", ha="center",
                va="center", transform=ax.transAxes)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def _counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives when the threshold sits at each distinct score, high to low."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    cut = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    return np.cumsum(y)[cut].astype(float), np.cumsum(1 - y)[cut].astype(float)


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    tp, fp = _counts(labels, scores)
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def pr_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision at every distinct threshold (recall rising)."""
    tp, fp = _counts(labels, scores)
    return tp / max(tp[-1], 1), tp / (tp + fp)


def roc_png(path: Path, curves: list[Curve], what: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="no skill (AUC 0.5)")
    for c in (c for c in curves if c.usable):
        fpr, tpr = roc_points(c.labels, c.scores)
        ax.plot(fpr, tpr, drawstyle="steps-post",
                label=f"{c.name} (AUC {roc_auc(c.labels, c.scores):.2f})")
    _finish(fig, ax, path, f"ROC, {what}", "false-positive rate (no-calls scored as calls)",
            "true-positive rate (recall)", curves)


def pr_png(path: Path, curves: list[Curve], what: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    usable = [c for c in curves if c.usable]
    if usable:
        share = float(usable[0].labels.mean())
        ax.axhline(share, linestyle=":", color="grey", label=f"no skill ({share:.2f} calls)")
    for c in usable:
        recall, precision = pr_points(c.labels, c.scores)
        ax.plot(np.r_[0.0, recall], np.r_[precision[0], precision], drawstyle="steps-pre",
                label=f"{c.name} (PR-AUC {average_precision(c.labels, c.scores):.2f})")
    _finish(fig, ax, path, f"Precision-recall, {what}", "recall", "precision", curves)


def threshold_png(path: Path, curves: list[Curve], what: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    grid = np.linspace(0.0, 1.0, 101)
    for k, c in enumerate(c for c in curves if c.usable):
        colour = f"C{k}"
        pos = c.labels == 1
        recall = [(c.scores[pos] > t).mean() for t in grid]
        precision = [float(c.labels[c.scores > t].mean()) if (c.scores > t).any() else np.nan
                     for t in grid]
        ax.plot(grid, precision, color=colour, label=f"{c.name}: precision")
        ax.plot(grid, recall, color=colour, linestyle="--", label=f"{c.name}: recall")
    _finish(fig, ax, path, f"Precision and recall against threshold, {what}",
            "threshold (score above it = call)", "precision / recall", curves)


def histogram_png(path: Path, curve: Curve, what: str, threshold: float | None) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    bins = np.linspace(0.0, 1.0, 21)
    for cls, name, colour in ((0, "no call", "C0"), (1, "call", "C1")):
        part = curve.scores[curve.labels == cls]
        ax.hist(part, bins=bins, alpha=0.6, color=colour, label=f"{name} ({part.size})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_title(f"Scores of calls and no-calls, {what}\n{curve.name}")
    ax.set_xlabel("score (probability of a call)")
    ax.set_ylabel(f"number of {what}")
    ax.set_xlim(0, 1)
    ax.legend(loc="upper center", fontsize="small")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(out: Path, level: str, curves: list[Curve], threshold: float | None,
              prefix: str = "") -> list[Path]:
    """Every plot of one level (``windows`` or ``clips``); the paths written."""
    what = level
    paths = [out / f"{prefix}roc_{level}.png", out / f"{prefix}pr_{level}.png",
             out / f"{prefix}threshold_{level}.png"]
    roc_png(paths[0], curves, what)
    pr_png(paths[1], curves, what)
    threshold_png(paths[2], curves, what)
    for k, c in enumerate(curves, start=1):
        p = out / f"{prefix}histogram_{level}_{k}.png"
        histogram_png(p, c, what, threshold)
        paths.append(p)
    return paths
