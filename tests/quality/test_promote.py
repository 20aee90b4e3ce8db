"""The promote-or-not line compares PR-AUC, precision and recall at each model's rule."""

from __future__ import annotations

from typing import Any

from listener.quality.run import promote_line


def _model(pr_auc: float, precision: float, recall: float,
           ci: tuple[float, float] = (0.5, 1.0)) -> dict[str, Any]:
    clips = {"pr_auc": {"value": pr_auc, "ci95": list(ci)},
             "precision": {"value": precision}, "recall": {"value": recall}}
    return {"clips": clips, "windows": clips}


def test_equal_ranking_but_fewer_false_alarms_is_promoted() -> None:
    line = promote_line(("1:old", _model(1.0, 0.5, 1.0)), ("2:new", _model(1.0, 1.0, 1.0)))
    assert line.startswith("promote 2:new over 1:old: yes"), line
    assert "intervals overlap" in line


def test_a_loss_on_any_figure_keeps_the_current_model() -> None:
    for new in (_model(0.85, 0.9, 0.95), _model(0.95, 0.8, 0.95), _model(0.95, 0.9, 0.8)):
        line = promote_line(("1:old", _model(0.9, 0.85, 0.9)), ("2:new", new))
        assert "no, keep the current model" in line, line


def test_a_sure_gain_says_so_without_the_shadow_advice() -> None:
    line = promote_line(("1:old", _model(0.6, 0.5, 0.5, (0.5, 0.7))),
                        ("2:new", _model(0.9, 0.8, 0.8, (0.8, 1.0))))
    assert line.endswith("at each model's rule)") and ": yes (" in line, line


def test_identical_models_are_not_promoted() -> None:
    same = _model(0.9, 0.8, 0.8)
    assert ": no," in promote_line(("1:a", same), ("2:b", same))
