"""Model backends: waveform windows at the model's own rate -> class probabilities.

* ``orcahello-resnet`` (:mod:`.resnet`): the OrcaHello ResNet18/50, every
  checkpoint layout and hub snapshot folders;
* ``transformers`` (:mod:`.transformers`): a local Hugging Face audio
  classifier (optional extra ``listener[transformers]``).

:func:`load_backend` builds one from a :class:`~.base.ModelPlan`
(:func:`~.check.plan_models` makes those from the config).
"""

from __future__ import annotations

from listener.config import FrontendConfig
from listener.model.backends.base import ModelBackend, ModelPlan

__all__ = ["ModelBackend", "ModelPlan", "load_backend"]


def load_backend(plan: ModelPlan, frontend_cfg: FrontendConfig | None = None, *,
                 allow_random_weights: bool = False) -> ModelBackend:
    """Load the model a plan names (``ModelLoadError`` on bad weights or a missing extra)."""
    if plan.backend == "transformers":
        from listener.model.backends.transformers import TransformersBackend

        return TransformersBackend(plan)
    from listener.model.backends.resnet import ResNetBackend

    return ResNetBackend(plan, frontend_cfg, allow_random_weights=allow_random_weights)
