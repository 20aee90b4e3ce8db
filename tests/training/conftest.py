"""Fixtures of the recipe tests: a small split, and a network to start from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from training.recipe_support import CFG, recordings

from listener.training.data import split_by_file
from listener.training.trainer import initial_model


@pytest.fixture(scope="module")
def data() -> tuple[list, list]:
    return split_by_file(recordings(), 0.5, seed=0)


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A network to fine-tune from (written as --init weights): the untrained one the
    recipe's seed builds. A few steps on this tiny data teach a ResNet18 nothing that
    holds on its eight validation windows (the trained epochs score below chance), and
    the wreck test needs a start above it (0.69); until runs from scratch stopped
    keeping epoch 0, "briefly trained" here gave these very weights."""
    torch.manual_seed(CFG.seed)
    state = initial_model(CFG).state_dict()
    out = tmp_path_factory.mktemp("start") / "start.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(out),
              metadata={"format": "listener", "architecture": "resnet18"})
    return out
