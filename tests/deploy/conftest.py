"""The deploy tests' fixtures: deploy/kubernetes rendered once per test module."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.k8s_layout import ALL_DIRS, Obj
from support.kustomize import render


@pytest.fixture(scope="module")
def rendered() -> dict[Path, list[Obj]]:
    return {d: render(d) for d in ALL_DIRS}
