"""``listener train --band-norm``: a band-normalised network from scratch, kept by its
fine-tunes, refused on a plain start."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from training.recipe_support import CFG, TINY, listener_cli, train_tiny_cli

from listener.errors import ListenerError
from listener.model.checkpoints import load_model
from listener.model.network import BAND_NORM_KEY
from listener.training.card import model_card, save_weights
from listener.training.trainer import initial_model, train

FILES = {"train": 4, "val": 4, "calls": 4, "backgrounds": 4, "skipped": 0}


def test_from_scratch_it_is_built_and_a_fine_tune_keeps_it(data: tuple[list, list],
                                                          tmp_path: Path) -> None:
    cfg = replace(CFG, epochs=1, band_norm=True)
    res = train(cfg, *data, TINY)
    assert BAND_NORM_KEY in res.state_dict
    out = tmp_path / "bn.safetensors"
    save_weights(res.state_dict, out, half=True, metadata={"format": "listener"})
    assert load_model(out)[0].band_norm
    assert "- Input: each mel band's median over the window is subtracted" in model_card(
        out, cfg, res, "data", FILES, half=True)
    # A fine-tune takes its start's input whatever its own flag says, and the card
    # says what the weights hold.
    tune = replace(CFG, epochs=1, init=str(out))
    tuned = train(tune, *data, TINY)
    assert BAND_NORM_KEY in tuned.state_dict
    assert "(`--band-norm`)" in model_card(out, tune, tuned, "data", FILES, half=True)


def test_a_plain_start_is_refused(start: Path) -> None:
    with pytest.raises(ListenerError, match=rf"--band-norm: {start} was trained without it"):
        initial_model(replace(CFG, init=str(start), band_norm=True))


def test_the_cli_refuses_a_plain_start_before_reading_data(start: Path, tmp_path: Path) -> None:
    res = listener_cli("train", tmp_path / "never-read", "--band-norm", "--init", start,
                       "--out", tmp_path / "m.safetensors", ok=(1,))
    assert f"--band-norm: {start} was trained without it" in res.stderr
    assert "never-read" not in res.stderr and not (tmp_path / "m.safetensors").exists()


@pytest.mark.slow
def test_the_cli_flag_trains_it(tmp_path: Path) -> None:
    out = tmp_path / "bn.safetensors"
    train_tiny_cli(tmp_path, out, "--band-norm", seed=3)
    assert load_model(out)[0].band_norm
    card = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "- Input: each mel band's median" in card and '"band_norm": true' in card
