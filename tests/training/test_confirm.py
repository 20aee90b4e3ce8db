"""A fine-tune's gain is checked on fresh windows before its weights replace the start's."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from training.recipe_support import CFG, TINY, listener_cli, recordings, same_weights

from listener.config import FrontendConfig
from listener.errors import ListenerError
from listener.model.frontend import Frontend
from listener.training.card import model_card
from listener.training.confirm import Confirmation, confirm, needs_check, settle
from listener.training.run import split_for
from listener.training.trainer import (
    TrainConfig,
    TrainResult,
    _Run,
    initial_model,
    train,
    training_budget,
)
from listener.training.validation import POOLED_DRAWS, figures, make_validation, score

CPU = torch.device("cpu")


def _result(state: dict[str, torch.Tensor], best_epoch: int = 2) -> TrainResult:
    history = [{"epoch": e, "loss": None if e == 0 else 0.5, "val_score": 0.7 + 0.05 * e,
                "val_roc_auc": 0.7, "val_pr_auc": 0.6, "sources": {}} for e in range(3)]
    return TrainResult(state, best_epoch, history[best_epoch]["val_score"], history, 1.0, "cpu",
                       None, 2, 2)


def test_confirm_scores_both_models_on_fresh_draws(data: tuple[list, list],
                                                    start: Path) -> None:
    cfg = replace(CFG, init=str(start))
    trained = train(replace(cfg, epochs=2, lr=2e-3), *data, TINY)
    check = confirm(cfg, data[1], TINY, replace(trained, best_epoch=2), initial_model(cfg),
                    CPU)
    calls = sum(r.positive for r in data[1])
    per_draw = calls * cfg.val_per_call_file + (len(data[1]) - calls) * cfg.val_per_background_file
    assert check.windows == POOLED_DRAWS * per_draw and len(check.kept_each) == POOLED_DRAWS
    # The start's first draw, recomputed by hand: seed + 1, not the per-epoch draw's seed.
    vs = make_validation(data[1], round(cfg.window_s * 20_000), cfg.seed + 1,
                         cfg.val_per_call_file, cfg.val_per_background_file, cfg.augment,
                         rate=20_000)
    by_hand = figures(vs, score(initial_model(cfg), Frontend(TINY), vs.waves, CPU))
    assert check.start_each[0] == pytest.approx(by_hand["balanced_roc_auc"])
    # The start against itself: a tie, and a tie keeps the start.
    same = confirm(cfg, data[1], TINY, _result(load_file(str(start))), initial_model(cfg),
                   CPU)
    assert same.kept == same.start and not same.holds
    assert "the gain does not hold: the starting weights are kept" in same.text()


def test_val_seed_draws_other_windows_of_the_same_files(data: tuple[list, list],
                                                        start: Path) -> None:
    cfg = replace(CFG, init=str(start), val_seed=7)
    assert CFG.draw_seed == CFG.seed and cfg.draw_seed == 7
    recs = data[0] + data[1]
    assert split_for(recs, cfg)[1] == split_for(recs, replace(cfg, val_seed=None))[1]
    n = round(cfg.window_s * 20_000)
    run = _Run(cfg, *data, TINY, CPU)
    mine = make_validation(data[1], n, 7, cfg.val_per_call_file, cfg.val_per_background_file,
                           cfg.augment, rate=20_000)
    usual = make_validation(data[1], n, cfg.seed, cfg.val_per_call_file,
                            cfg.val_per_background_file, cfg.augment, rate=20_000)
    assert np.array_equal(run.val.waves, mine.waves)
    assert not np.array_equal(run.val.waves, usual.waves)
    # The check's draws follow the per-epoch draw's seed: 8, 9, ...
    check = confirm(cfg, data[1], TINY, _result(load_file(str(start))), initial_model(cfg),
                    CPU)
    vs = make_validation(data[1], n, 8, cfg.val_per_call_file, cfg.val_per_background_file,
                         cfg.augment, rate=20_000)
    by_hand = figures(vs, score(initial_model(cfg), Frontend(TINY), vs.waves, CPU))
    assert check.start_each[0] == pytest.approx(by_hand["balanced_roc_auc"])


def test_a_start_chosen_on_this_draw_is_named(data: tuple[list, list], start: Path,
                                              tmp_path: Path) -> None:
    chosen = tmp_path / "chosen.safetensors"
    save_file(load_file(str(start)), str(chosen),
              metadata={"format": "listener", "recipe": json.dumps(CFG.to_json())})
    recs = data[0] + data[1]
    notes = split_for(recs, replace(CFG, init=str(chosen)))[3]
    assert any("chosen on validation windows drawn as this run draws them (split seed 0, "
               "window seed 0)" in n for n in notes), notes
    for other in (replace(CFG, init=str(chosen), val_seed=100),  # fresh windows
                  replace(CFG, init=str(start))):  # a start that records no recipe
        assert not any("chosen on validation windows" in n for n in split_for(recs, other)[3])


def test_settle_keeps_the_start_unless_the_gain_holds(start: Path) -> None:
    cfg = replace(CFG, init=str(start))
    other = {k: (v + 1 if v.is_floating_point() else v) for k, v in load_file(str(start)).items()}
    result = _result(other)
    held = Confirmation(2, 0.82, 0.80, (0.81, 0.83), (0.80, 0.80), 40)
    assert settle(result, held, initial_model(cfg)) is result
    lost = Confirmation(2, 0.79, 0.80, (0.78, 0.81), (0.80, 0.80), 40)
    kept = settle(result, lost, initial_model(cfg))
    assert kept.best_epoch == 0 and kept.best_score == pytest.approx(0.7)
    assert same_weights(kept.state_dict, load_file(str(start)))
    assert "gain per draw -0.020 to +0.010" in lost.text()
    assert lost.to_json()["holds"] is False and held.to_json()["kept_each"] == [0.81, 0.83]


def test_only_a_fine_tune_that_beat_its_start_is_checked(start: Path) -> None:
    state = load_file(str(start))
    val = recordings()[:2]
    assert needs_check(replace(CFG, init=str(start)), _result(state), val)
    assert not needs_check(CFG, _result(state), val)  # from scratch: nothing to compare
    assert not needs_check(replace(CFG, init=str(start)), _result(state, 0), val)
    assert not needs_check(replace(CFG, init=str(start), confirm_draws=0), _result(state), val)
    assert not needs_check(replace(CFG, init=str(start)), _result(state), [])
    nan = replace(_result(state), best_score=float(np.nan))  # no validation windows
    assert not needs_check(replace(CFG, init=str(start)), nan, val)
    with pytest.raises(ListenerError, match="--confirm-draws 51: must be 0"):
        TrainConfig(confirm_draws=51)


def test_a_bad_confirm_draws_is_refused_naming_the_flag(tmp_path: Path) -> None:
    res = listener_cli("train", tmp_path / "never-read", "--confirm-draws", "99",
                       "--out", tmp_path / "m.safetensors", ok=(1,))
    assert "--confirm-draws 99: must be 0 (off) to 50" in res.stderr
    assert not (tmp_path / "m.safetensors").exists()


def test_the_card_says_when_the_check_kept_the_start(start: Path, tmp_path: Path) -> None:
    cfg = replace(CFG, init=str(start))
    lost = Confirmation(2, 0.79, 0.80, (0.78, 0.81), (0.80, 0.80), 40)
    files = {"train": 2, "val": 2, "calls": 2, "backgrounds": 2, "skipped": 0,
             "check": lost.text()}
    out = tmp_path / "m.safetensors"
    text = model_card(out, cfg, settle(_result(load_file(str(start))), lost, initial_model(cfg)),
                      "d", files, half=False)
    assert "Kept epoch 0 of 2" in text and "**the starting weights were kept**" in text
    assert f"- Fine-tune check: {lost.text()}." in text
    held = model_card(out, cfg, _result(load_file(str(start))), "d",
                      {**files, "check": "x"}, half=False)
    assert "Kept epoch 2 of 2" in held and "were kept" not in held


def test_a_fine_tunes_time_budget_leaves_time_for_its_check(data: tuple[list, list],
                                                             start: Path) -> None:
    history = [{"epoch": 0, "val_s": 2.0}]
    fine_tune = replace(CFG, init=str(start), time_budget_s=100.0)
    assert training_budget(fine_tune, history) == pytest.approx(100.0 - 2 * POOLED_DRAWS * 2.0)
    assert training_budget(replace(fine_tune, confirm_draws=0), history) == 100.0
    assert training_budget(replace(CFG, time_budget_s=100.0), history) == 100.0  # scratch
    assert training_budget(replace(fine_tune, time_budget_s=None), history) is None
    # Every epoch's row says how long its validation took: epoch 0's sizes the reserve.
    res = train(replace(fine_tune, epochs=1), *data, TINY)
    assert all(h["val_s"] > 0 for h in res.history)


def test_the_card_names_the_frontend_settings_the_network_learnt_from(
        start: Path, tmp_path: Path) -> None:
    files = {"train": 2, "val": 2, "calls": 2, "backgrounds": 2, "skipped": 0}
    result = _result(load_file(str(start)))
    out = tmp_path / "m.safetensors"
    plain = model_card(out, CFG, result, "d", {**files, "frontend": FrontendConfig()},
                       half=False)
    assert "default `frontend` settings" in plain
    small = model_card(out, CFG, result, "d", {**files, "frontend": TINY}, half=False)
    assert "default `frontend` settings" not in small
    assert f"n_mels: {TINY.n_mels}" in small and "score it with the same settings" in small
