"""The models of a station, planned once before any audio is fetched.

:func:`plan_models` resolves each model's labels (from its folder's
``config.json``, read as JSON only), targets, windows and rule, and turns
every problem into a :class:`~listener.errors.ConfigError` naming file, line
(the config's origin) and key. :func:`plan_station` is what the composition
root, ``check-config`` and the file commands call: the plans, and the config
with a snapshot's thresholds in ``detection``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from listener.config import Config, ModelEntry, RuleConfig, origin_of
from listener.config.base import hop_problem
from listener.errors import ConfigError, ModelLoadError
from listener.model.backends.base import (
    RESNET_LABELS,
    TRANSFORMERS_HOP_S,
    TRANSFORMERS_WINDOW_S,
    ModelPlan,
    default_targets,
    target_problem,
)
from listener.model.snapshot import labels_of, read_config_json, read_snapshot

EXTRA_OF_BACKEND = {"transformers": "transformers"}


class _PlanError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def extra_installed(backend: str) -> bool:
    """Whether the optional packages a backend needs are importable."""
    module = EXTRA_OF_BACKEND.get(backend)
    return module is None or importlib.util.find_spec(module) is not None


def _resnet_plan(entry: ModelEntry, cfg: Config) -> ModelPlan:
    det = cfg.detection
    labels: tuple[str, ...] = RESNET_LABELS
    local, glob = det.local_threshold, det.global_threshold
    if entry.weights is not None and Path(entry.weights).is_dir():
        try:
            snap = read_snapshot(entry.weights)
        except ModelLoadError as err:
            raise _PlanError("weights", str(err)) from err
        if snap.labels is not None:
            if len(snap.labels) != len(RESNET_LABELS):
                raise _PlanError("weights", f"{entry.weights}: id2label has "
                                 f"{len(snap.labels)} labels; the ResNet has 2 classes")
            labels = snap.labels
        # config.json's thresholds, unless the station config sets its own.
        if snap.local_threshold is not None and "local_threshold" not in det.model_fields_set:
            local = snap.local_threshold
        if snap.global_threshold is not None and "global_threshold" not in det.model_fields_set:
            glob = snap.global_threshold
    rule = entry.rule or RuleConfig(local_threshold=local, global_threshold=glob)
    return ModelPlan(entry, labels, entry.target_labels or (labels[1],),
                     entry.window_s or det.window_s, entry.hop_s or det.hop_s, rule)


def _transformers_plan(entry: ModelEntry, cfg: Config) -> ModelPlan:
    if not extra_installed("transformers"):
        raise _PlanError("backend", "backend 'transformers' needs the optional extra: "
                         "pip install 'listener[transformers]'")
    if entry.weights is None:
        raise _PlanError("weights", "backend 'transformers' needs weights: the folder a "
                         "model was saved to with save_pretrained")
    try:
        config = read_config_json(entry.weights)
        labels = labels_of(config, str(Path(entry.weights) / "config.json"))
    except ModelLoadError as err:
        raise _PlanError("weights", str(err)) from err
    if labels is None:
        raise _PlanError("weights", f"{entry.weights}/config.json has no id2label; "
                         f"label names are needed for target_labels")
    det = cfg.detection
    rule = entry.rule or RuleConfig(local_threshold=det.local_threshold,
                                    global_threshold=det.global_threshold)
    targets = entry.target_labels or default_targets(labels)
    return ModelPlan(entry, labels, targets, entry.window_s or TRANSFORMERS_WINDOW_S,
                     entry.hop_s or TRANSFORMERS_HOP_S, rule)


def _plan(entry: ModelEntry, cfg: Config) -> ModelPlan:
    plan = (_transformers_plan if entry.backend == "transformers" else _resnet_plan)(entry, cfg)
    if (problem := target_problem(plan.labels, plan.targets)) is not None:
        raise _PlanError("target_labels", problem)
    if (problem := hop_problem(plan.window_s, plan.hop_s)) is not None:
        raise _PlanError("hop_s", problem)
    if plan.window_s > cfg.detection.clip_s:
        raise _PlanError("window_s", f"window_s ({plan.window_s}) is longer than "
                         f"detection.clip_s ({cfg.detection.clip_s})")
    return plan


def plan_models(cfg: Config, *, path: str | None = None,
                lines: dict[tuple, int] | None = None) -> list[ModelPlan]:
    """Every configured model, resolved; ``ConfigError`` naming the key on a problem."""
    origin = origin_of(cfg)
    if path is None and origin.path is not None:
        path, lines = origin.path, dict(origin.lines)
    plans = []
    for i, entry in enumerate(cfg.model_entries()):
        prefix: tuple[str | int, ...] = ("models", i) if cfg.models is not None else ("model",)
        try:
            plans.append(_plan(entry, cfg))
        except _PlanError as err:
            loc = (*prefix, err.field)
            line = (lines or {}).get(loc) or (lines or {}).get(prefix)
            raise ConfigError(str(err), path=path, line=line,
                              key=".".join(str(p) for p in loc)) from err
    return plans


@dataclass(frozen=True)
class StationPlan:
    """A station's config and its models, planned: the primary first."""

    cfg: Config
    models: tuple[ModelPlan, ...]

    @property
    def primary(self) -> ModelPlan:
        return self.models[0]


def plan_station(cfg: Config) -> StationPlan:
    """Plan every model once; a snapshot's thresholds reach ``detection``.

    With a ResNet primary whose weights are a snapshot folder, thresholds
    stated in its ``config.json`` become the station's ``detection``
    thresholds unless the YAML sets them, so every reader of ``detection``
    (the file commands, the records) uses them.
    """
    plans = sorted(plan_models(cfg), key=lambda p: p.role != "primary")
    primary = plans[0]
    det = cfg.detection
    if primary.backend == "orcahello-resnet" and (
            primary.rule.local_threshold, primary.rule.global_threshold) != (
            det.local_threshold, det.global_threshold):
        cfg = cfg.model_copy(update={"detection": det.model_copy(update={
            "local_threshold": primary.rule.local_threshold,
            "global_threshold": primary.rule.global_threshold})})
    return StationPlan(cfg, tuple(plans))
