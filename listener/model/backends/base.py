"""The model-backend interface and a model's resolved plan.

A backend turns waveform windows at the model's own rate into per-window
class probabilities ``(B, n_labels)``. :class:`ModelPlan` is one entry of the
config's ``models:`` with every default resolved (labels, targets, windows,
rule), computed at config load so bad labels fail before any audio is fetched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from listener.config import ModelEntry, RuleConfig

# The ResNet's two classes: class 1 is a call (orcahello-model.md, "Network").
RESNET_LABELS = ("other", "call")
# OrcaHello's negative classes: never a detection (LiveInferenceOrchestrator).
NEGATIVE_LABELS = frozenset({"other", "water", "vessel", "jingle", "human"})
# OrcaHello runs its transformer on 3 s segments every 2 s.
TRANSFORMERS_WINDOW_S = 3.0
TRANSFORMERS_HOP_S = 2.0


def default_targets(labels: Sequence[str]) -> tuple[str, ...]:
    """Every label OrcaHello does not treat as negative (``call`` for the ResNet)."""
    return tuple(label for label in labels if label not in NEGATIVE_LABELS)


def target_problem(labels: Sequence[str], targets: Sequence[str]) -> str | None:
    """Why ``targets`` cannot be a model's call labels, or None (checked in one place:
    the plan reports it naming the key, the decision rule refuses it)."""
    unknown = [t for t in targets if t not in labels]
    if unknown or not targets:
        return f"unknown label(s) {unknown or []}; the model's labels are {list(labels)}"
    return None


@runtime_checkable
class ModelBackend(Protocol):
    """What the pipelines need of a model, whatever its framework."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def window_s(self) -> float: ...

    @property
    def hop_s(self) -> float: ...

    @property
    def labels(self) -> tuple[str, ...]: ...

    @property
    def info(self) -> Mapping[str, Any]: ...

    def prepare(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """One window at its native rate -> mono float32 at :attr:`sample_rate`."""
        ...

    def prepare_batch(self, windows: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        """Windows of one native rate and one length -> ``(B, samples')`` float32.

        Row ``i`` is bit for bit ``prepare(windows[i], sample_rate)``; the
        pipelines call this (grouping windows by rate and length with
        :func:`listener.pipeline.prepare.prepare_windows`), ``prepare`` is
        for a lone window. ``ValueError`` on windows of different lengths.
        """
        ...

    def predict(self, waves: np.ndarray) -> np.ndarray:
        """``(B, samples)`` prepared windows -> ``(B, n_labels)`` float64 probabilities."""
        ...


@dataclass(frozen=True)
class ModelPlan:
    """One configured model with its defaults resolved."""

    entry: ModelEntry
    labels: tuple[str, ...]
    targets: tuple[str, ...]
    window_s: float
    hop_s: float
    rule: RuleConfig

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def backend(self) -> str:
        return self.entry.backend

    @property
    def role(self) -> str:
        return self.entry.role

    @property
    def weights(self) -> Path | None:
        return self.entry.weights

    def describe(self) -> dict[str, Any]:
        """The plan as plain JSON values (for ``detect`` output and events)."""
        return {"id": self.id, "backend": self.backend, "role": self.role,
                "labels": list(self.labels), "target_labels": list(self.targets),
                "window_s": self.window_s, "hop_s": self.hop_s,
                "rule": self.rule.model_dump(mode="json")}


class PlannedBackend:
    """What every backend takes from its plan: its windowing and its info block.

    Subclasses set ``plan`` and ``_info`` in their constructor.
    """

    plan: ModelPlan
    _info: dict[str, Any]

    @property
    def window_s(self) -> float:
        return self.plan.window_s

    @property
    def hop_s(self) -> float:
        return self.plan.hop_s

    @property
    def info(self) -> dict[str, Any]:
        return self._info
