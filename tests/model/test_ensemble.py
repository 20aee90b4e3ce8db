"""Averaged ensembles (``listener ensemble``): one file, the mean of its members' scores,
refused where one network is needed, and bad files named."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from support.calibrated import calibrated_model, synthetic_waves
from support.cli import run_cli

from listener.config import FrontendConfig, ModelConfig
from listener.errors import ListenerError, ModelLoadError
from listener.model.checkpoints import load_model
from listener.model.ensemble import load_network, write_ensemble
from listener.model.frontend import Frontend
from listener.model.inspect import inspect_checkpoint
from listener.model.lineage import read_lineage
from listener.model.network import (
    AveragedEnsemble,
    build_model,
    mean_probabilities,
    subtract_band_median,
)
from listener.model.scorer import Scorer

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def features() -> torch.Tensor:
    with torch.no_grad():
        return Frontend(FrontendConfig())(torch.from_numpy(synthetic_waves(6)))


def _save(model: torch.nn.Module, path: Path, meta: dict[str, str] | None = None,
          half: bool = False) -> Path:
    tensors = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
               for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=meta)
    return path


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory, features: torch.Tensor) -> list[Path]:
    """A plain network (float16 file, a complete lineage) and a band-normalised one."""
    d = tmp_path_factory.mktemp("members")
    plain = _save(calibrated_model(features, seed=1), d / "plain.safetensors",
                  {"trained_on": "00000000000000aa,00000000000000bb",
                   "trained_on_complete": "true"}, half=True)
    normed = _save(calibrated_model(subtract_band_median(features), seed=2, band_norm=True),
                   d / "normed.safetensors",
                   {"trained_on": "00000000000000bb,00000000000000cc",
                    "trained_on_complete": "true"})
    return [plain, normed]


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory, members: list[Path]) -> Path:
    out = tmp_path_factory.mktemp("ens") / "ens.safetensors"
    write_ensemble(members, out, model_id="test-ensemble")
    return out


def test_mean_probabilities_are_logits_of_the_mean() -> None:
    logits = [torch.randn(5, 2) * 4 for _ in range(3)]
    mean = torch.stack([torch.softmax(x, dim=1) for x in logits]).mean(0)
    torch.testing.assert_close(torch.softmax(mean_probabilities(logits), dim=1), mean)


def test_the_file_holds_every_member_as_written(ensemble: Path, members: list[Path]) -> None:
    with safe_open(str(ensemble), framework="pt") as f:
        meta, names = f.metadata(), list(f.keys())
        assert f.get_tensor("members.0.conv1.weight").dtype == torch.float16  # kept as its file
        assert f.get_tensor("members.1.conv1.weight").dtype == torch.float32
    assert "members.1.input_norm.band_median" in names
    assert "members.0.input_norm.band_median" not in names
    assert [m["file"] for m in json.loads(meta["ensemble_of"])] == [p.name for p in members]
    assert meta["model_id"] == "test-ensemble"
    lineage = read_lineage(ensemble)  # any member's training file is never its validation
    assert lineage.digests == {"00000000000000aa", "00000000000000bb", "00000000000000cc"}
    assert lineage.complete


def test_it_loads_as_the_mean_of_its_members(ensemble: Path, members: list[Path],
                                            features: torch.Tensor,
                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="listener.model.checkpoints"):
        model, info = load_network(ensemble)
    assert isinstance(model, AveragedEnsemble) and info.architecture == "resnet18"
    assert f"loaded ensemble of 2 resnet18 weights from {ensemble}" in caplog.text
    assert [m.band_norm for m in model.networks()] == [False, True]
    nets = [load_model(p)[0] for p in members]
    with torch.no_grad():
        mean = sum(torch.softmax(n(features), dim=1) for n in nets) / 2
        torch.testing.assert_close(torch.softmax(model(features), dim=1), mean)
    summary = inspect_checkpoint(ensemble)
    assert (summary.members, summary.architecture, summary.band_norm) == (2, "resnet18", False)


@pytest.mark.parametrize(("fuse", "channels_last"), [(False, False), (True, True)])
def test_the_scorer_scores_the_mean(ensemble: Path, members: list[Path], fuse: bool,
                                    channels_last: bool) -> None:
    waves = synthetic_waves(6, seed=4)

    def scores(path: Path) -> np.ndarray:
        cfg = ModelConfig(weights=path, fuse_batchnorm=fuse, channels_last=channels_last)
        return Scorer(cfg).score_waves(waves)

    alone = [scores(p) for p in members]
    scorer = Scorer(ModelConfig(weights=ensemble, fuse_batchnorm=fuse,
                                channels_last=channels_last))
    np.testing.assert_allclose(scorer.score_waves(waves), (alone[0] + alone[1]) / 2, atol=1e-6)
    assert abs(alone[0] - alone[1]).max() > 1e-3  # the members differ: the mean is not either
    assert scorer.info["members"] == 2
    assert scorer.info["parameter_count"] == 2 * load_model(members[0])[1].parameter_count


def test_a_float32_stage_is_kept_in_every_member(ensemble: Path) -> None:
    from listener.model.precision import ExecutionPlan

    plan = ExecutionPlan(precision="bfloat16", dtype=torch.bfloat16, fuse_batchnorm=True,
                         channels_last=False, float32_stages=("layer4",))
    scorer = Scorer(ModelConfig(weights=ensemble), plan=plan)
    for net in scorer.model.networks():  # type: ignore[union-attr]
        assert net.layer4[0].conv1.weight.dtype == torch.float32
        assert net.layer1[0].conv1.weight.dtype == torch.bfloat16
    float32 = Scorer(ModelConfig(weights=ensemble)).score_waves(synthetic_waves(6, seed=4))
    np.testing.assert_allclose(scorer.score_waves(synthetic_waves(6, seed=4)), float32,
                               atol=2e-2)


def test_one_network_is_asked_for_where_training_needs_one(ensemble: Path) -> None:
    with pytest.raises(ModelLoadError, match=rf"{ensemble}: an averaged ensemble"):
        load_model(ensemble)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: {**t, "conv1.weight": t["members.0.conv1.weight"].clone()},
     r"holds only 'members.<i>.<name>' tensors; found 'conv1.weight'"),
    (lambda t: {**t, "members.01.conv1.weight": t["members.1.conv1.weight"].clone()},
     r"found 'members.01.conv1.weight'"),
    (lambda t: {k: v for k, v in t.items() if k.startswith("members.0.")},
     r"numbered 0..n-1, 2 <= n <= 8; found \[0\]"),
    (lambda t: {k.replace("members.1.", "members.2."): v for k, v in t.items()},
     r"numbered 0..n-1, 2 <= n <= 8; found \[0, 2\]"),
    (lambda t: {k: v for k, v in t.items() if k != "members.1.layer2.0.conv1.weight"},
     r"member 1: the weights do not fit .* missing keys: layer2.0.conv1.weight"),
])
def test_a_malformed_ensemble_is_named(ensemble: Path, tmp_path: Path, edit: object,
                                       message: str) -> None:
    bad = tmp_path / "bad.safetensors"
    save_file(edit(_tensors(ensemble)), str(bad))  # type: ignore[operator]
    with pytest.raises(ModelLoadError, match=message):
        load_network(bad)
    with pytest.raises(ModelLoadError) as err:
        Scorer(ModelConfig(weights=bad))
    assert str(bad) in str(err.value)


def test_members_of_two_architectures_are_refused(members: list[Path], tmp_path: Path) -> None:
    big = _save(build_model("resnet50"), tmp_path / "r50.safetensors")
    with pytest.raises(ModelLoadError, match=r"r50.safetensors \(resnet50\).* one architecture"):
        write_ensemble([members[0], big], tmp_path / "mixed.safetensors")
    assert not (tmp_path / "mixed.safetensors").exists()


def test_writing_refuses_too_few_members_and_nested_ensembles(
        ensemble: Path, members: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="needs 2 to 8 networks; got 1"):
        write_ensemble(members[:1], tmp_path / "one.safetensors")
    with pytest.raises(ModelLoadError, match=rf"{ensemble}: is itself an averaged ensemble"):
        write_ensemble([ensemble, members[0]], tmp_path / "nested.safetensors")
    with pytest.raises(ListenerError, match="model id 'a b'"):
        write_ensemble(members, tmp_path / "id.safetensors", model_id="a b")



def test_the_cli_writes_one_that_detect_scores_as_the_mean(members: list[Path],
                                                            tmp_path: Path) -> None:
    out = tmp_path / "cli.safetensors"
    res = run_cli("ensemble", *members, "--out", out)
    assert res.returncode == 0, res.stderr
    assert "the average of 2 resnet18 networks" in res.stdout
    assert "normed.safetensors (band-normalised)" in res.stdout
    clip = DATA / "hls" / "rpi_orcasound_lab" / "1594150218" / "live001.ts"
    scores = []
    for weights in (*members, out):
        js = tmp_path / f"{weights.stem}.json"
        res = run_cli("detect", clip, "--weights", weights, "--json", js)
        assert res.returncode == 0, res.stderr
        doc = json.loads(js.read_text())
        scores.append([w["score"] for w in doc["windows"]])
    assert doc["model"]["members"] == 2  # the events' and detect's model block says so
    a, b, mean = map(np.asarray, scores)
    assert len(mean) == 9
    np.testing.assert_allclose(mean, (a + b) / 2, atol=1e-6)


def test_train_refuses_an_ensemble_start_before_reading_data(ensemble: Path,
                                                             tmp_path: Path) -> None:
    res = run_cli("train", tmp_path / "never-read", "--init", ensemble,
               "--out", tmp_path / "m.safetensors")
    assert res.returncode == 1, res.stderr
    assert f"--init {ensemble}: an averaged ensemble of 2 networks" in res.stderr
    assert "never-read" not in res.stderr and "Traceback" not in res.stderr
