"""Fixtures of the recipe tests: a small split, and a briefly trained model to start from."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import save_file
from training.recipe_support import CFG, TINY, recordings

from listener.training.data import split_by_file
from listener.training.trainer import train


@pytest.fixture(scope="module")
def data() -> tuple[list, list]:
    return split_by_file(recordings(), 0.5, seed=0)


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory, data: tuple[list, list]) -> Path:
    """A briefly trained model to fine-tune from (written as --init weights)."""
    res = train(replace(CFG, epochs=1, steps_per_epoch=4), *data, TINY)
    out = tmp_path_factory.mktemp("start") / "start.safetensors"
    save_file({k: v.contiguous() for k, v in res.state_dict.items()}, str(out),
              metadata={"format": "listener", "architecture": "resnet18"})
    return out
