"""Learning from a teacher (``listener train --teacher``): the targets, the pull towards
the teacher, reproducibility, lineage, and the CLI."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from training.recipe_support import (
    CFG,
    TINY,
    listener_cli,
    same_weights,
    train_tiny_cli,
)
from training.test_lineage import _files, _weights

from listener.errors import ListenerError
from listener.model.frontend import Frontend
from listener.model.lineage import Lineage, digest, read_lineage
from listener.model.network import build_model
from listener.training.distill import distillation_loss, soft_targets
from listener.training.run import split_for
from listener.training.trainer import TrainConfig, train
from listener.training.validation import score


def test_the_target_mixes_label_and_teacher() -> None:
    labels, teacher = torch.tensor([0, 1, 1]), torch.tensor([0.8, 0.2, 1.0])
    t = soft_targets(labels, teacher, 0.25)
    torch.testing.assert_close(t[:, 1], torch.tensor([0.2, 0.8, 1.0]))
    torch.testing.assert_close(t.sum(1), torch.ones(3))
    logits = torch.randn(3, 2)
    hard = torch.nn.functional.cross_entropy(logits, labels)
    # A teacher that agrees with the labels changes nothing, whatever its weight.
    torch.testing.assert_close(distillation_loss(logits, labels, labels.float(), 0.7), hard)
    assert not torch.isclose(distillation_loss(logits, labels, teacher, 0.7), hard)


def _constant(path: Path, p_call: float) -> Path:
    """A network that says ``p_call`` whatever it hears (its last layer is a bias)."""
    model = build_model("resnet18")
    logit = float(np.log(p_call / (1 - p_call)))
    with torch.no_grad():
        model.head.fc2.weight.zero_()
        model.head.fc2.bias.copy_(torch.tensor([0.0, logit]))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"trained_on": "", "trained_on_complete": "true"})
    return path


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("teachers")
    return _constant(d / "yes.safetensors", 0.999), _constant(d / "no.safetensors", 0.001)


def _mean_score(state: dict[str, torch.Tensor], waves: np.ndarray) -> float:
    model = build_model("resnet18")
    model.load_state_dict(state)
    return float(score(model, Frontend(TINY), waves, torch.device("cpu")).mean())


def test_the_student_is_pulled_towards_the_teacher(data: tuple[list, list], start: Path,
                                                   tmp_path: Path,
                                                   teachers: tuple[Path, Path]) -> None:
    """The same run, labels and seed; only the teacher differs. Only the head trains
    (BatchNorm statistics of the body stay as in eval), and the last step's weights (the
    checkpoint's) are compared: the kept epoch may be the start."""
    cfg = replace(CFG, epochs=1, steps_per_epoch=20, teacher_weight=1.0, init=str(start),
                  train_from="head", lr=0.03, confirm_draws=0)
    waves = np.stack([np.resize(r.wave, 40_000) for r in data[1]])
    means = []
    for teacher in teachers:
        ckpt = tmp_path / f"{teacher.stem}.ckpt.pt"
        train(replace(cfg, teacher=str(teacher)), *data, TINY, checkpoint=ckpt)
        means.append(_mean_score(torch.load(ckpt, weights_only=True)["model"], waves))
    assert means[0] > 0.9 and means[1] < 0.1, means  # whatever the labels say


def test_a_run_with_a_teacher_is_reproducible(data: tuple[list, list],
                                              teachers: tuple[Path, Path]) -> None:
    cfg = replace(CFG, epochs=1, teacher=str(teachers[0]))
    assert same_weights(train(cfg, *data, TINY).state_dict, train(cfg, *data, TINY).state_dict)


def test_the_teachers_files_stay_out_of_validation(tmp_path: Path) -> None:
    recs = _files(tmp_path / "data")
    seen = [r for r in recs if r.path.stem in {"c0", "c1", "b0"}]
    teacher = _weights(tmp_path / "teacher.safetensors",
                       Lineage(frozenset(digest(r.path) for r in seen)).to_metadata())
    train_set, val_set, start, notes = split_for(
        recs, TrainConfig(teacher=str(teacher), val_fraction=0.34))
    assert {r.path for r in seen} <= {r.path for r in train_set}
    assert not {r.path for r in val_set} & {r.path for r in seen}
    assert start.digests == {digest(r.path) for r in seen}
    assert notes == ["3 files the teacher trained on were kept out of validation"]


def test_a_weight_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ListenerError, match=r"--teacher-weight 1\.5: must be above 0"):
        TrainConfig(teacher="t.safetensors", teacher_weight=1.5)


@pytest.mark.slow
def test_the_cli_trains_with_a_teacher(tmp_path: Path, teachers: tuple[Path, Path]) -> None:
    out = tmp_path / "student.safetensors"
    train_tiny_cli(tmp_path, out, "--teacher", teachers[0], "--teacher-weight", "0.3",
                   "--val-seed", "9", seed=5)
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert len(meta["teacher_sha256"]) == 64 and '"teacher_weight": 0.3' in meta["recipe"]
    assert read_lineage(out).complete
    card = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "- Teacher: `yes.safetensors` (sha256 " in card
    assert "0.7 x its label + 0.3 x the teacher's call probability" in card
    assert '"val_seed": 9' in meta["recipe"]
    assert "their validation windows drawn with seed 9" in card


def test_the_cli_refuses_a_missing_teacher_before_reading_data(tmp_path: Path) -> None:
    res = listener_cli("train", tmp_path / "never-read", "--teacher", tmp_path / "gone.pt",
                       "--out", tmp_path / "m.safetensors", ok=(1,))
    assert f"{tmp_path / 'gone.pt'}: weights file not found" in res.stderr
    assert "never-read" not in res.stderr and not (tmp_path / "m.safetensors").exists()
