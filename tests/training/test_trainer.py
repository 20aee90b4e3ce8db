"""A few training steps on real clips: the loss falls, the file loads, detect reads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support.cli import run_cli

from listener.model.checkpoints import load_model
from listener.model.frontend import Frontend
from listener.quality.labels import read_labels
from listener.training.augment import AugmentConfig
from listener.training.card import model_card, save_weights, write_card
from listener.training.data import Recording, load_recordings, split_by_file
from listener.training.trainer import (
    TrainConfig,
    _Run,
    autocast_for,
    make_batch,
    train,
)

DATA = Path(__file__).parents[1] / "data"
NO_MASKS = AugmentConfig(freq_masks=0, time_masks=0)


@pytest.fixture(scope="module")
def recordings() -> list[Recording]:
    recs, problems = load_recordings(read_labels(DATA / "train"), Frontend())
    assert not problems
    return recs


def test_split_is_by_file_and_keeps_both_classes(recordings: list[Recording]) -> None:
    train_set, val_set = split_by_file(recordings, 0.5, seed=0)
    assert {r.group for r in train_set}.isdisjoint({r.group for r in val_set})
    for part in (train_set, val_set):
        assert {r.positive for r in part} == {True, False}
    assert split_by_file(recordings, 0.5, seed=0) == (train_set, val_set)  # seeded


def test_batches_are_balanced_and_seeded(recordings: list[Recording]) -> None:
    calls = [r for r in recordings if r.positive]
    bgs = [r for r in recordings if not r.positive]
    a, ya = make_batch(calls, bgs, 6, 40000, np.random.default_rng(3), NO_MASKS,
                       rate=20_000)
    b, yb = make_batch(calls, bgs, 6, 40000, np.random.default_rng(3), NO_MASKS,
                       rate=20_000)
    assert a.shape == (6, 40000) and a.dtype == np.float32 and int(ya.sum()) == 3
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)


def test_a_few_steps_lower_the_loss(recordings: list[Recording]) -> None:
    calls = [r for r in recordings if r.positive]
    bgs = [r for r in recordings if not r.positive]
    waves, labels = make_batch(calls, bgs, 4, 40000, np.random.default_rng(0), NO_MASKS,
                               rate=20_000)
    cfg = TrainConfig(augment=NO_MASKS, lr=1e-3, epochs=1, steps_per_epoch=4)
    run = _Run(cfg, recordings, [], None, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    losses = [run.step(waves, labels, gen) for _ in range(4)]
    assert losses[-1] < losses[0], losses


def test_bf16_only_where_the_cpu_has_it() -> None:
    cpu = torch.device("cpu")
    assert autocast_for(cpu, frozenset({"fpu", "avx2", "amx_bf16", "amx_tile"})) is torch.bfloat16
    assert autocast_for(cpu, frozenset({"avx512_bf16"})) is torch.bfloat16
    assert autocast_for(cpu, frozenset({"fpu", "avx2", "avx512f"})) is None
    assert autocast_for(torch.device("cuda"), frozenset()) is torch.bfloat16


@pytest.mark.slow
def test_train_resume_save_and_detect(recordings: list[Recording], tmp_path: Path) -> None:
    train_set, val_set = split_by_file(recordings, 0.5, seed=0)
    cfg = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=4, val_per_call_file=1,
                      val_per_background_file=1, augment=NO_MASKS)
    ckpt = tmp_path / "run.ckpt.pt"
    result = train(cfg, train_set, val_set, checkpoint=ckpt)
    assert len(result.history) == 2 and ckpt.exists()  # epoch 0 (the start) and 1
    again = train(cfg, train_set, val_set, checkpoint=ckpt)  # resumed: nothing left to do
    assert again.history == result.history
    out = tmp_path / "tiny.safetensors"
    save_weights(result.state_dict, out, half=True, metadata={"format": "listener"})
    card = write_card(out, model_card(out, cfg, result, str(DATA / "train"),
                                      {"train": 2, "val": 2, "calls": 2, "backgrounds": 2,
                                       "skipped": 0}, half=True))
    assert "Validation balanced ROC-AUC" in card.read_text()
    model, info = load_model(out)
    assert info.architecture == "resnet18"
    assert next(model.parameters()).dtype == torch.float32  # fp16 file, float32 network
    raven, audacity = tmp_path / "out.selections.txt", tmp_path / "out.txt"
    res = run_cli("detect", DATA / "train" / "calls" / "Biggs_song_08.wav", "--weights", out,
                  "--raven", raven, "--audacity", audacity)
    assert res.returncode == 0, res.stderr
    assert raven.read_text().startswith("Selection\tView\tChannel\tBegin Time (s)")
    assert audacity.exists()


def test_a_recipe_reads_back_from_its_json() -> None:
    cfg = TrainConfig(val_seed=4, init="a.safetensors",
                      augment=AugmentConfig(snr_db=(-20.0, 5.0), eq_db=3.0))
    assert TrainConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    with pytest.raises(TypeError):
        TrainConfig.from_json({"no_such_key": 1})
