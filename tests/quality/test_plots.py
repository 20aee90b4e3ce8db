"""The evaluation plots carry titles, axis labels and legends; without matplotlib, JSON only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from listener.quality import plots


def test_every_plot_has_title_axis_labels_and_a_legend_per_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure
    seen: list[dict[str, Any]] = []
    real_savefig = Figure.savefig

    def spy(fig: Figure, path: Any, **kw: Any) -> None:
        ax = fig.axes[0]
        legend = ax.get_legend()
        seen.append({"path": Path(path).name, "title": ax.get_title(),
                     "x": ax.get_xlabel(), "y": ax.get_ylabel(),
                     "legend": [t.get_text() for t in legend.get_texts()] if legend else []})
        real_savefig(fig, path, **kw)
    monkeypatch.setattr(Figure, "savefig", spy)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    curves = [plots.Curve("1:current", labels, rng.random(60)),
              plots.Curve("2:new", labels, np.clip(labels * 0.6 + rng.random(60) * 0.5, 0, 1))]
    paths = plots.write_all(tmp_path, "clips", curves, 0.5)
    assert [p.name for p in paths] == ["roc_clips.png", "pr_clips.png", "threshold_clips.png",
                                       "histogram_clips_1.png", "histogram_clips_2.png"]
    assert all(p.stat().st_size > 5000 for p in paths)
    for fig in seen:
        assert fig["title"] and fig["x"] and fig["y"], fig
    by_name = {f["path"]: f for f in seen}
    assert "no skill" in " ".join(by_name["roc_clips.png"]["legend"])
    assert "no skill" in " ".join(by_name["pr_clips.png"]["legend"])
    for name in ("roc_clips.png", "pr_clips.png"):  # one line per model
        assert sum(m in t for t in by_name[name]["legend"] for m in ("1:current", "2:new")) == 2
    assert {"1:current: precision", "2:new: recall"} <= set(by_name["threshold_clips.png"]
                                                            ["legend"])
    assert any("call" in t for t in by_name["histogram_clips_1.png"]["legend"])


def test_without_matplotlib_the_cli_names_the_extra() -> None:
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from listener.quality import plots\n"
            "print(plots.available(), plots.EXTRA)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert res.stdout.strip() == "False pip install 'listener[plots]'"


def test_plots_of_one_class_say_why_they_have_no_curve(tmp_path: Path) -> None:
    """Clips without a call (ROC undefined): each curve plot says so, and matplotlib
    warns about no empty legend."""
    import warnings

    from matplotlib.figure import Figure
    texts: list[list[str]] = []
    real_savefig = Figure.savefig

    def spy(fig: Figure, path: Any, **kw: Any) -> None:
        texts.append([t.get_text() for t in fig.axes[0].texts])
        real_savefig(fig, path, **kw)
    curves = [plots.Curve("1:current", np.zeros(5, dtype=np.int64), np.linspace(0, 1, 5))]
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("error")  # "No artists with labels found" would fail here
        mp.setattr(Figure, "savefig", spy)
        plots.write_all(tmp_path, "clips", curves, 0.5)
    why = "no curve: these need both calls and no-calls"
    assert [why in t for t in texts[:3]] == [True, True, True], texts
