"""``orcahello-resnet``: today's ResNet path (:class:`~listener.model.scorer.Scorer`) as a backend.

It wraps the Scorer unchanged (frontend quirks, checkpoint layouts, speed
options) and turns its call probability ``p`` into the two-class row
``(1 - p, p)``: the network's softmax has exactly those two values.
It also keeps the Scorer's ``frontend``/``score_waves``/``info``, so it is a
``WindowScorer`` for the live station too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from listener.config import FrontendConfig
from listener.model.backends.base import ModelPlan, PlannedBackend
from listener.model.frontend import Frontend
from listener.model.scorer import Scorer


class ResNetBackend(PlannedBackend):
    """The OrcaHello ResNet18/50 behind the backend interface."""

    def __init__(self, plan: ModelPlan, frontend_cfg: FrontendConfig | None = None, *,
                 allow_random_weights: bool = False, scorer: Scorer | None = None) -> None:
        self.plan = plan
        self.scorer = scorer or Scorer(plan.entry.model_config_view(), frontend_cfg,
                                       allow_random_weights=allow_random_weights)
        self._info: dict[str, Any] = {**self.scorer.info, "id": plan.id,
                                      "backend": "orcahello-resnet", "role": plan.role,
                                      "labels": list(plan.labels)}

    @property
    def sample_rate(self) -> int:
        return self.scorer.frontend.cfg.sample_rate

    @property
    def labels(self) -> tuple[str, ...]:
        return self.plan.labels

    @property
    def frontend(self) -> Frontend:
        return self.scorer.frontend

    @property
    def min_samples(self) -> int:
        return self.scorer.frontend.min_samples

    def prepare(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        return self.scorer.frontend.prepare(samples, sample_rate)

    def prepare_batch(self, windows: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        return self.scorer.frontend.prepare_batch(windows, sample_rate)

    def score_waves(self, waves: np.ndarray) -> np.ndarray:
        return self.scorer.score_waves(waves)

    def predict(self, waves: np.ndarray) -> np.ndarray:
        p = self.scorer.score_waves(waves)
        return np.stack([1.0 - p, p], axis=1)
