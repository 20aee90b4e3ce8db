"""The rule that decides whether a retrained demo model ships (scripts/demo_selection.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "demo_selection.py"


@pytest.fixture(scope="module")
def selection() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_selection", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scores(new: float, old: float, new_earlier: float, old_earlier: float) -> dict[str, float]:
    return {"unseen:new": new, "unseen:previous demo model": old,
            "earlier:new": new_earlier, "earlier:previous demo model": old_earlier}


@pytest.mark.parametrize("figures, ships", [
    ((0.971, 0.907, 0.973, 0.971), True),  # the shipped stage 2 against stage 1
    ((0.872, 0.873, 0.964, 0.971), False),  # the equaliser run: lower on both
    ((0.950, 0.900, 0.955, 0.970), False),  # better only on windows made its own way
    ((0.950, 0.900, 0.961, 0.970), True),  # within the tolerance on the previous recipe's
    ((0.900, 0.900, 0.990, 0.900), False),  # a tie is not a gain
])
def test_a_new_model_ships_only_when_it_gains_and_keeps_what_the_old_one_handled(
        selection: ModuleType, figures: tuple[float, float, float, float], ships: bool) -> None:
    wins, verdict = selection._verdict(_scores(*figures))
    assert wins is ships
    assert verdict.startswith("**The new model replaces" if ships else "**The previous model")
    assert f"{figures[0]:.3f} against {figures[1]:.3f}" in verdict
    assert selection.EARLIER_TOLERANCE == 0.01


def test_the_verdict_reports_the_gain_in_each_draw(selection: ModuleType) -> None:
    draws = {"unseen:new": [0.95, 0.97, 0.93], "unseen:previous demo model": [0.96, 0.90, 0.91]}
    wins, verdict = selection._verdict(_scores(0.95, 0.92, 0.97, 0.97), draws)
    assert wins and "gain per draw -0.010 to +0.070" in verdict
    assert selection.SELECTION_DRAWS >= 5


def test_an_ensemble_is_judged_on_the_previous_recipes_windows(selection: ModuleType,
                                                               tmp_path: Path) -> None:
    """An averaged ensemble records no recipe; a trained model's own recipe is used."""
    import json
    from dataclasses import replace

    import torch
    from safetensors.torch import save_file

    from listener.training.trainer import TrainConfig

    previous, trained, ensemble = (tmp_path / f"{n}.safetensors" for n in ("p", "t", "e"))
    recipe = replace(TrainConfig(), init="/stage1.safetensors", seed=7)
    for path, meta in ((previous, {"recipe": json.dumps(recipe.to_json())}),
                       (trained, {"recipe": json.dumps(replace(recipe, seed=3).to_json())}),
                       (ensemble, {"ensemble_of": "[]"})):
        save_file({"x": torch.zeros(1)}, str(path), metadata=meta)
    judged = selection.candidate_recipe(str(ensemble), str(previous))
    assert judged == replace(selection.recipe_of(str(previous)), init=None)
    assert judged.seed == 7 and judged.augment == recipe.augment
    assert selection.candidate_recipe(str(trained), str(previous)).seed == 3
