"""The recipe's guarantees: bit-identical reruns and resumes, safe fine-tuning, time budget."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from training.recipe_support import (
    CFG,
    TINY,
    call,
    listener_cli,
    noise,
    recordings,
    same_weights,
    write_wav,
)

from listener.errors import ListenerError
from listener.training.augment import AugmentConfig
from listener.training.data import Recording, SourcePool, split_by_file
from listener.training.trainer import train
from listener.training.validation import make_validation, weighted_roc_auc


class Stop(Exception):
    pass


@pytest.mark.parametrize("ema_decay", [0.0, 0.8])
def test_init_runs_are_identical_and_a_resumed_run_matches(
        data: tuple[list, list], start: Path, tmp_path: Path, ema_decay: float) -> None:
    cfg = replace(CFG, init=str(start), lr=2e-4, ema_decay=ema_decay)
    a = train(cfg, *data, TINY, checkpoint=tmp_path / "a.pt")
    b = train(cfg, *data, TINY)
    assert same_weights(a.state_dict, b.state_dict)
    assert [h["loss"] for h in a.history[1:]] == [h["loss"] for h in b.history[1:]]

    def stop_in_epoch_2(done: int, total: int, status: str) -> None:
        if done == cfg.steps_per_epoch + 1:  # first step of epoch 2: a SIGTERM mid-epoch
            raise Stop
    ckpt = tmp_path / "c.pt"
    with pytest.raises(Stop):
        train(cfg, *data, TINY, checkpoint=ckpt, progress=stop_in_epoch_2)
    doc = torch.load(ckpt, weights_only=True)
    assert {"rng", "gen", "torch_rng", "cuda_rng"} <= doc.keys()  # generator states travel
    assert len(doc["cuda_rng"]) == torch.cuda.device_count()
    c = train(cfg, *data, TINY, checkpoint=ckpt)
    assert [h["loss"] for h in c.history[1:]] == [h["loss"] for h in a.history[1:]]
    assert same_weights(a.state_dict, c.state_dict)
    assert a.best_epoch == c.best_epoch


def test_a_checkpoint_of_another_command_is_refused(data: tuple[list, list],
                                                     tmp_path: Path) -> None:
    def stop_in_epoch_2(done: int, total: int, status: str) -> None:
        if done == CFG.steps_per_epoch + 1:
            raise Stop
    ckpt = tmp_path / "run.pt"
    with pytest.raises(Stop):
        train(CFG, *data, TINY, checkpoint=ckpt, progress=stop_in_epoch_2)
    before = ckpt.read_bytes()
    with pytest.raises(ListenerError) as err:
        train(replace(CFG, lr=1e-4, val_seed=3), *data, TINY, checkpoint=ckpt)
    assert str(ckpt) in str(err.value) and "another training command" in str(err.value)
    assert "lr: 0.002 there, 0.0001 now" in str(err.value)
    assert "val_seed: None there, 3 now" in str(err.value)
    assert ckpt.read_bytes() == before  # nothing loaded, nothing overwritten
    fainter = replace(CFG, augment=replace(CFG.augment, snr_db=(-20.0, 5.0)))
    with pytest.raises(ListenerError, match=r"\(augment\.snr_db: \[-10\.0, 15\.0\] there, "
                       r"\[-20\.0, 5\.0\] now\)"):
        train(fainter, *data, TINY, checkpoint=ckpt)
    # When to stop may change: a longer patience resumes and ends as an uninterrupted run.
    longer = train(replace(CFG, patience=50), *data, TINY, checkpoint=ckpt)
    assert same_weights(longer.state_dict, train(CFG, *data, TINY).state_dict)


def test_a_checkpoint_of_other_data_or_another_frontend_is_refused(
        data: tuple[list, list], tmp_path: Path) -> None:
    ckpt = tmp_path / "run.pt"
    one_epoch = replace(CFG, epochs=1, steps_per_epoch=1)
    train(one_epoch, *data, TINY, checkpoint=ckpt)
    before = ckpt.read_bytes()
    other = split_by_file(recordings(seed=7), 0.5, seed=0)  # same names, other audio
    with pytest.raises(ListenerError, match=r"another training command \(data\.recordings: "
                       r"'4 training and 4 held-out recordings, digest [0-9a-f]{16}' there"):
        train(one_epoch, *other, TINY, checkpoint=ckpt)
    with pytest.raises(ListenerError, match=r"\(data\.frontend: .*'n_mels': 32.* there, "
                       r".*'n_mels': 24.* now\)"):
        train(one_epoch, *data, TINY.model_copy(update={"n_mels": 24}), checkpoint=ckpt)
    assert ckpt.read_bytes() == before
    train(one_epoch, *data, TINY, checkpoint=ckpt)  # the same data resumes


def test_the_cli_refuses_a_foreign_or_damaged_checkpoint_before_reading_data(
        tmp_path: Path) -> None:
    ckpt, out = tmp_path / "run.ckpt.pt", tmp_path / "m.safetensors"
    torch.save({"history": "[]", "recipe": json.dumps({"lr": 5.0})}, ckpt)
    res = listener_cli("train", tmp_path / "never-read", "--checkpoint", ckpt, "--out", out,
                       ok=(1,))
    assert f"{ckpt}: this checkpoint belongs to another training command (" in res.stderr
    assert "lr: 5.0 there, 0.002 now" in res.stderr
    ckpt.write_bytes(b"not a checkpoint")
    res = listener_cli("train", tmp_path / "never-read", "--checkpoint", ckpt, "--out", out,
                       ok=(1,))
    assert f"{ckpt}: not a readable training checkpoint" in res.stderr
    assert "never-read" not in res.stderr and not out.exists()
    assert ckpt.read_bytes() == b"not a checkpoint"  # nothing overwritten


def test_init_with_a_wrecking_lr_keeps_weights_no_worse_than_start(
        data: tuple[list, list], start: Path) -> None:
    from safetensors.torch import load_file
    begin = load_file(str(start))
    res = train(replace(CFG, init=str(start), lr=5.0), *data, TINY)
    epoch0 = res.history[0]
    assert epoch0["epoch"] == 0 and not math.isnan(epoch0["val_score"])
    assert res.best_score >= epoch0["val_score"]
    assert all(h["val_score"] < epoch0["val_score"] or math.isnan(h["val_score"])
               for h in res.history[1:]), "lr 5.0 should wreck the model"
    assert res.best_epoch == 0 and same_weights(res.state_dict, begin)


def test_time_budget_stops_before_an_epoch_that_would_overrun(data: tuple[list, list]) -> None:
    res = train(replace(CFG, epochs=50, time_budget_s=1e-6), *data, TINY)
    assert res.stop == "time budget" and len(res.history) == 2  # epoch 0 and one epoch


def test_split_holds_out_files_of_every_source() -> None:
    recs = recordings(calls=6, backgrounds=6)
    train_set, val_set = split_by_file(recs, 0.34, seed=1)
    assert {r.group for r in train_set}.isdisjoint({r.group for r in val_set})
    assert {(r.positive, r.source) for r in val_set} == {(True, "a"), (True, "b"),
                                                        (False, "x"), (False, "y")}


def test_a_split_with_no_background_file_to_hold_out_is_refused() -> None:
    """One background file per source: every epoch's ROC-AUC would be undefined (NaN)."""
    recs = recordings(calls=6, backgrounds=2)  # sources x and y hold one file each
    with pytest.raises(ListenerError, match="no background file could be held out for "
                       "validation \\(every background source has a single file\\)"):
        split_by_file(recs, 0.34, seed=1)


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.5, math.nan])
def test_a_val_fraction_outside_zero_to_one_is_refused_naming_the_flag(fraction: float) -> None:
    with pytest.raises(ListenerError, match=rf"--val-fraction {fraction:g}: must be above 0 "
                       "and below 1"):
        replace(CFG, val_fraction=fraction)


def test_the_cli_refuses_a_val_fraction_of_zero(tmp_path: Path) -> None:
    res = listener_cli("train", tmp_path / "never-read", "--val-fraction", "0",
                       "--out", tmp_path / "m.safetensors", ok=(1,))
    assert "--val-fraction 0: must be above 0 and below 1" in res.stderr
    assert not (tmp_path / "m.safetensors").exists()


def test_a_copy_of_a_file_under_another_name_is_split_with_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    recs = []
    for name, positive, wave in (("c0", True, call(1.5, rng)), ("c1", True, call(1.5, rng)),
                                 ("b0", False, noise(2.0, rng)), ("b1", False, noise(2.0, rng))):
        path = tmp_path / ("calls" if positive else "background") / "a" / f"{name}.wav"
        write_wav(path, wave)
        recs.append(Recording(path, positive, wave))
    copy = tmp_path / "calls" / "a" / "c0 (1).wav"  # sorts before c0.wav: the group's first
    copy.write_bytes(recs[0].path.read_bytes())
    recs.append(Recording(copy, True, recs[0].wave))
    for seed in range(6):
        _, val_set = split_by_file(recs, 0.34, seed)
        sides = {r.path.name: r in val_set for r in recs}
        assert sides["c0.wav"] == sides["c0 (1).wav"], seed
    assert f"{recs[0].path} has the same bytes as {copy}" in caplog.text


def test_source_pool_balances_sources() -> None:
    recs = recordings(calls=10, backgrounds=0)[:10]
    recs = [replace_source(r, "big" if i < 9 else "small") for i, r in enumerate(recs)]
    rng = np.random.default_rng(0)
    pool = SourcePool(recs, power=0.0)
    draws = [pool.draw(rng).source for _ in range(2000)]
    assert 0.45 < draws.count("small") / len(draws) < 0.55


def replace_source(r, source):  # type: ignore[no-untyped-def]
    r2 = type(r)(r.path, r.positive, r.wave, source)
    return r2


def test_weighted_auc_matches_plain_auc_with_equal_weights() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200), 1)  # ties
    from listener.quality.metrics import roc_auc
    assert weighted_roc_auc(labels, scores, np.ones(200)) == pytest.approx(
        roc_auc(labels, scores))


def test_with_ema_the_average_is_kept_never_the_raw_weights(
        data: tuple[list, list], start: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file
    cfg = replace(CFG, init=str(start), lr=2e-3, epochs=1, steps_per_epoch=3, ema_decay=0.5)
    res = train(cfg, *data, TINY, checkpoint=tmp_path / "e.pt")
    doc = torch.load(tmp_path / "e.pt", weights_only=True)
    assert int(doc["ema"]["n_averaged"]) == 3
    ema = {k.removeprefix("module."): v for k, v in doc["ema"].items() if k != "n_averaged"}
    assert not same_weights(ema, doc["model"])  # the average lags the trained weights
    assert same_weights(res.state_dict, doc["best"])
    assert (same_weights(res.state_dict, ema) if res.best_epoch == 1
            else same_weights(res.state_dict, load_file(str(start))))


def test_a_bad_ema_decay_or_model_id_is_refused_before_any_work(tmp_path: Path) -> None:
    from listener.config import default_config
    from listener.errors import ListenerError
    from listener.training.cache import AudioCache
    from listener.training.run import TrainInputs, run_training
    for decay in (1.0, -0.1):
        with pytest.raises(ListenerError, match=r"ema_decay .*: must be at least 0 and below 1"):
            replace(CFG, ema_decay=decay)
    missing = tmp_path / "no-such-data"  # never read: the id is checked first
    with pytest.raises(ListenerError, match="model id 'a b': use 1-128"):
        run_training(TrainInputs(data=[missing]), default_config(), CFG,
                     tmp_path / "m.safetensors", AudioCache(tmp_path / "cache", 20000, ()),
                     tmp_path / "m.ckpt", half=False, model_id="a b")


def test_a_reversed_range_is_refused_naming_the_flag(tmp_path: Path) -> None:
    res = listener_cli("train", tmp_path / "never-read", "--gain-db", "10", "-10",
                       "--out", tmp_path / "m.safetensors", ok=(1, 2))
    assert "--gain-db 10 -10: the low end exceeds the high end" in res.stderr
    assert not (tmp_path / "m.safetensors").exists()


def test_the_level_range_spans_the_live_streams_levels() -> None:
    """Window levels land within gain_db (dB re 0.05 RMS), down to quiet live segments."""
    from listener.training.augment import channel, rms
    cfg = AugmentConfig(lowpass_p=0.0, highpass_p=0.0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(40_000).astype(np.float32)
    levels = np.array([20 * np.log10(rms(channel(x, rng, cfg, rate=20_000)) / 0.05)
                       for _ in range(400)])
    assert levels.min() >= cfg.gain_db[0] - 0.01 and levels.max() <= cfg.gain_db[1] + 0.01
    assert levels.min() < -50 and levels.max() > 20  # a quiet Orcasound segment: -53 dB


def test_the_equaliser_stays_within_its_range_and_is_off_by_default() -> None:
    from listener.training.augment import EQ_ANCHORS_HZ, band_limit
    x = np.random.default_rng(0).standard_normal(40_000).astype(np.float32)
    f = np.fft.rfftfreq(x.size, 1 / 20_000)
    spectrum = np.abs(np.fft.rfft(x))
    off = AugmentConfig(lowpass_p=0.0, highpass_p=0.0)  # eq_db 0: no draw, no change
    rng = np.random.default_rng(1)
    assert band_limit(x, 20_000, rng, off) is x
    before = np.random.default_rng(1)
    before.random(2)  # the low- and high-pass draws, as before the equaliser existed
    assert rng.random() == before.random()  # so the default recipe's examples are unchanged
    on = AugmentConfig(lowpass_p=0.0, highpass_p=0.0, eq_db=6.0, eq_p=1.0)
    rng = np.random.default_rng(2)
    spread = []
    for _ in range(40):
        y = np.abs(np.fft.rfft(band_limit(x, 20_000, rng, on)))
        at = [20 * np.log10(y[np.argmin(np.abs(f - hz))] / spectrum[np.argmin(np.abs(f - hz))])
              for hz in EQ_ANCHORS_HZ]
        assert all(-6.01 <= g <= 6.01 for g in at), at
        spread.append(at)
    assert np.ptp(np.asarray(spread), axis=0).min() > 6.0  # each anchor really varies


def test_an_equaliser_out_of_range_is_refused_naming_the_flag(tmp_path: Path) -> None:
    res = listener_cli("train", tmp_path / "never-read", "--eq-db", "-3",
                       "--out", tmp_path / "m.safetensors", ok=(1, 2))
    assert "--eq-db -3: must be 0 (off) to 40 dB" in res.stderr


def _epochs(init: str | None, scores: list[float]):  # type: ignore[no-untyped-def]
    """The result of ``_consider`` fed epochs 0.. with these validation scores."""
    from types import SimpleNamespace

    from listener.training.resume import State
    from listener.training.trainer import TrainResult, _consider
    run = SimpleNamespace(cfg=replace(CFG, init=init), kept=torch.nn.Linear(1, 1))
    state = State.fresh({}, 0)
    for epoch, value in enumerate(scores):
        _consider(state, {"epoch": epoch, "loss": None if epoch == 0 else 0.5,
                          "val_score": value, "val_pr_auc": value}, run)  # type: ignore[arg-type]
    return TrainResult(state.best, state.best_epoch, state.best_score, state.history, 1.0,
                       "cpu", None, 2, 2)


def test_from_scratch_the_untrained_network_is_never_kept() -> None:
    scratch = _epochs(None, [0.9, 0.4, 0.6, 0.5])
    assert (scratch.best_epoch, scratch.best_score) == (2, 0.6)
    assert scratch.learnt_nothing  # 0.6 is below the random weights' 0.9: said, not hidden
    assert not _epochs(None, [0.5, 0.4, 0.7]).learnt_nothing
    tuned = _epochs("start.safetensors", [0.9, 0.4, 0.6])  # a fine-tune keeps its start
    assert (tuned.best_epoch, tuned.learnt_nothing) == (0, False)
    assert _epochs(None, [math.nan, math.nan]).best_epoch == 1  # no validation: the last


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 2])  # both outcomes, on the machines tried
def test_the_cli_keeps_a_trained_epoch_and_says_when_it_learnt_nothing(
        tmp_path: Path, seed: int) -> None:
    from training.recipe_support import train_tiny_cli

    from listener.model.metadata import safetensors_metadata
    out = tmp_path / "w.safetensors"
    res = train_tiny_cli(tmp_path, out, "--seed", str(seed), seed=seed)
    card = (tmp_path / "w.md").read_text()
    assert "Kept epoch 1 of 1 (epoch 0 = the untrained network" in card
    assert safetensors_metadata(str(out))["best_epoch"] == "1"
    rows = {line.split("|")[1].strip(): float(line.split("|")[3])
            for line in card.splitlines() if line.startswith(("| 0 |", "| 1 |"))}
    said = "learnt nothing that holds"
    assert (said in res.stderr) == (rows["0"] >= rows["1"]) == (said in card), rows


def test_validation_band_limits_land_at_their_hz_at_the_frontends_rate() -> None:
    rate, n = 16_000, 32_000
    rng = np.random.default_rng(0)
    white = Recording(Path("background/x/w.wav"), False, rng.standard_normal(4 * n)
                      .astype(np.float32))
    cfg = AugmentConfig(lowpass_p=1.0, lowpass_hz=(5000.0, 5000.0), highpass_p=0.0,
                        event_p=0.0, gain_db=(0.0, 0.0))
    vs = make_validation([white], n, 0, 0, 8, cfg, rate=rate)
    power = np.mean(np.abs(np.fft.rfft(vs.waves, axis=1)) ** 2, axis=0)
    f = np.fft.rfftfreq(n, 1 / rate)
    at = {hz: power[np.abs(f - hz) < 100].mean() for hz in (1000, 5000)}
    assert at[5000] / at[1000] == pytest.approx(0.5, abs=0.1)  # -3 dB at the asked corner
