"""A model records what it trained on; a fine-tune from it never validates on those files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from training.recipe_support import (
    TINY_YAML,
    call,
    listener_cli,
    noise,
    recordings,
    write_wav,
)

from listener.errors import ListenerError
from listener.model.lineage import Lineage, digest, read_lineage
from listener.training.data import Recording, split_by_file
from listener.training.run import split_for
from listener.training.trainer import TrainConfig


def _weights(path: Path, metadata: dict[str, str]) -> Path:
    save_file({"w": torch.zeros(1)}, str(path), metadata=metadata)
    return path


def _files(root: Path, seed: int = 0, n: int = 6) -> list[Recording]:
    """Real files (digests are of their bytes), two sources per class."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        for positive, kind in ((True, "calls"), (False, "background")):
            path = root / kind / "ab"[i % 2] / f"{kind[0]}{i}.wav"
            wave = call(1.5, rng) if positive else noise(2.0, rng)
            write_wav(path, wave)
            out.append(Recording(path, positive, wave))
    return out


def test_without_pins_the_split_is_unchanged() -> None:
    recs = recordings(calls=6, backgrounds=6)
    assert split_by_file(recs, 0.5, 0, frozenset()) == split_by_file(recs, 0.5, 0)


def test_pinned_files_are_never_held_out_and_the_fraction_holds() -> None:
    recs = recordings(calls=8, backgrounds=8)
    plain_val = split_by_file(recs, 0.5, 0)[1]
    pinned = frozenset(r.group for r in plain_val)  # exactly the files plainly held out
    train_set, val_set = split_by_file(recs, 0.5, 0, pinned)
    assert val_set and not {r.group for r in val_set} & pinned
    assert pinned <= {r.group for r in train_set}
    assert len(val_set) == len(plain_val)  # the same share of every source, other files


def test_read_lineage_round_trips_and_names_a_bad_entry(tmp_path: Path) -> None:
    lineage = Lineage(frozenset({"0123456789abcdef", "fedcba9876543210"}))
    good = _weights(tmp_path / "good.safetensors", lineage.to_metadata())
    assert read_lineage(good) == lineage
    old = _weights(tmp_path / "old.safetensors", {"format": "listener"})
    assert read_lineage(old) == Lineage(frozenset(), complete=False)
    bad = _weights(tmp_path / "bad.safetensors", {"trained_on": "0123456789abcdef,../etc"})
    with pytest.raises(ListenerError, match=r"bad\.safetensors: metadata trained_on: entry "
                                            r"'\.\./etc' is not a list"):
        read_lineage(bad)


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=200))
def test_any_trained_on_text_reads_or_is_refused_clearly(tmp_path_factory: pytest.TempPathFactory,
                                                         text: str) -> None:
    path = _weights(tmp_path_factory.mktemp("fuzz") / "w.safetensors", {"trained_on": text})
    try:
        got = read_lineage(path)
    except ListenerError as err:
        assert "w.safetensors: metadata trained_on" in str(err)
    else:
        assert all(len(d) == 16 for d in got.digests)


def test_split_for_keeps_the_starting_models_files_in_training(tmp_path: Path) -> None:
    recs = _files(tmp_path / "data")
    seen = [r for r in recs if r.path.stem in {"c0", "c1", "c2", "b0", "b1"}]
    init = _weights(tmp_path / "start.safetensors",
                    Lineage(frozenset(digest(r.path) for r in seen)).to_metadata())
    cfg = TrainConfig(init=str(init), val_fraction=0.34)
    train_set, val_set, start, notes = split_for(recs, cfg)
    assert {r.path for r in seen} <= {r.path for r in train_set}
    assert val_set and not {r.path for r in val_set} & {r.path for r in seen}
    assert start.complete and notes == ["5 files the starting model trained on were kept out "
                                        "of validation"]


def test_split_for_says_when_validation_cannot_avoid_them(tmp_path: Path) -> None:
    recs = _files(tmp_path / "data", n=4)
    every_call = [r for r in recs if r.positive]
    init = _weights(tmp_path / "start.safetensors",
                    Lineage(frozenset(digest(r.path) for r in every_call)).to_metadata())
    _, val_set, _, notes = split_for(recs, TrainConfig(init=str(init), val_fraction=0.5))
    assert any(r.positive for r in val_set)  # the plain split, rather than no validation
    assert notes == ["validation holds files the starting model trained on (no call file it "
                     "did not train on could be held out): the starting weights score "
                     "optimistically"]
    every_background = [r for r in recs if not r.positive]
    init = _weights(tmp_path / "start2.safetensors",
                    Lineage(frozenset(digest(r.path) for r in every_background)).to_metadata())
    _, val_set, _, notes = split_for(recs, TrainConfig(init=str(init), val_fraction=0.5))
    assert {r.positive for r in val_set} == {True, False}
    assert notes[0].startswith("validation holds files the starting model trained on (no "
                               "background file it did not train on")
    old = _weights(tmp_path / "old.safetensors", {"format": "listener"})
    _, _, start, notes = split_for(recs, TrainConfig(init=str(old), val_fraction=0.5))
    assert not start.complete
    assert notes == ["the starting model does not record every file it trained on: validation "
                     "may hold some, and then favours the starting weights"]
    assert split_for(recs, replace(TrainConfig(val_fraction=0.5)))[3] == []


@pytest.mark.slow
def test_a_fine_tune_records_its_chain_and_validates_on_new_files(tmp_path: Path) -> None:
    """Through the CLI: train A on one folder, fine-tune B from A on it and a new folder."""
    first, second = tmp_path / "first", tmp_path / "second"
    _files(first, seed=1, n=4)
    _files(second, seed=2, n=4)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_YAML, encoding="utf-8")
    common = ["--config", cfg, "--cache", tmp_path / "cache", "--no-aac", "--epochs", "1",
              "--steps", "2", "--batch-size", "4", "--val-fraction", "0.5", "--seed", "0"]
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    listener_cli("train", first, "--out", a, *common)
    listener_cli("train", first, second, "--init", a, "--out", b, *common, "--gain-db", "-30", "0")
    lineage_a, lineage_b = read_lineage(a), read_lineage(b)
    first_files = {digest(p) for p in first.rglob("*.wav")}
    assert lineage_a.complete and lineage_b.complete
    assert lineage_a.digests < first_files  # A held some of its files out
    assert lineage_a.digests < lineage_b.digests  # B carries A's files and its own
    card = b.with_suffix(".md").read_text(encoding="utf-8")
    assert (f"- Validation: {len(lineage_a.digests)} files the starting model trained on were "
            "kept out of validation.") in card
    # the levels B trained at, as the daemon's level gauge reads them
    assert "- Window levels: -30..+0 dB re 0.05 RMS, -56 to -26 dBFS" in card
