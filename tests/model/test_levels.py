"""listener.model.levels: the window levels a model trained at, from its recipe."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from listener.model.levels import REFERENCE_RMS, levels_dbfs, trained_levels_dbfs
from listener.model.network import BAND_NORM_KEY

DEMO = Path(__file__).resolve().parents[2] / "listener" / "data" / "demo_resnet18.safetensors"


def _weights(path: Path, **metadata: str) -> Path:
    save_file({"w": torch.zeros(1)}, str(path), metadata=metadata)
    return path


def test_the_demo_model_trained_at_minus_81_to_minus_1_dbfs() -> None:
    low, high = trained_levels_dbfs(DEMO) or (0.0, 0.0)
    assert (round(low, 2), round(high, 2)) == (-81.02, -1.02)  # -55..+25 dB re 0.05 RMS
    assert levels_dbfs((0.0, 0.0))[0] == pytest.approx(20 * torch.log10(
        torch.tensor(REFERENCE_RMS)).item())


def test_weights_without_a_recorded_range_have_none(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    assert trained_levels_dbfs(None) is None
    assert trained_levels_dbfs(_weights(tmp_path / "plain.safetensors")) is None
    older = json.dumps({"epochs": 8, "augment": {"snr_db": [-10, 15]}})  # before gain_db
    assert trained_levels_dbfs(_weights(tmp_path / "old.safetensors", recipe=older)) is None
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"not read")
    assert trained_levels_dbfs(pt) is None
    assert not caplog.records


@pytest.mark.parametrize("recipe, problem", [
    ("{not json", "Expecting property name"),
    ('["a list"]', "not a JSON object with an 'augment' object"),
    ('{"augment": {"gain_db": [10, -10]}}', "augment.gain_db is [10, -10]"),
    ('{"augment": {"gain_db": [0, NaN]}}', "not [low, high] in dB"),
    ('{"augment": {"gain_db": [true, 3]}}', "not [low, high] in dB"),
    ('{"augment": {"gain_db": "-55..25"}}', "not [low, high] in dB"),
])
def test_a_recipe_that_does_not_read_is_named_and_informs_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, recipe: str, problem: str) -> None:
    path = _weights(tmp_path / "bad.safetensors", recipe=recipe)
    with caplog.at_level(logging.WARNING, logger="listener.model.levels"):
        assert trained_levels_dbfs(path) is None
    message = caplog.records[0].getMessage()
    assert str(path) in message and problem in message and "unknown" in message


def test_a_band_normalised_network_has_no_level_range(tmp_path: Path) -> None:
    recipe = json.dumps({"band_norm": True, "augment": {"gain_db": [-55, 25]}})
    path = tmp_path / "band.safetensors"
    save_file({"w": torch.zeros(1), BAND_NORM_KEY: torch.zeros(256)}, str(path),
              metadata={"recipe": recipe})
    plain = _weights(tmp_path / "plain.safetensors", recipe=recipe)
    assert trained_levels_dbfs(path) is None
    assert trained_levels_dbfs(plain) == levels_dbfs((-55.0, 25.0))
