"""The model sections: ``model`` (one network) and ``models:`` (several, with roles).

Split from :mod:`listener.config.sections` along the seam between the
station (stream, windows, outputs) and the models that score it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from listener.config.base import Positive, _Section, hop_problem
from listener.errors import ListenerError

log = logging.getLogger(__name__)


Precision = Literal["auto", "float32", "bfloat16", "float16"]
PRECISIONS: tuple[Precision, ...] = ("auto", "float32", "bfloat16", "float16")


MODEL_ID_PATTERN = r"^[A-Za-z0-9_.:/-]{1,128}$"


def require_model_id(model_id: str) -> None:
    """Refuse a model id that a config could not name (files declare theirs in metadata)."""
    if not re.match(MODEL_ID_PATTERN, model_id):
        raise ListenerError(f"model id {model_id!r}: use 1-128 letters, digits and _.:/-")


StageName = Annotated[str, Field(pattern=r"^layer[1-4](\.[0-9]{1,2})?$")]


class ModelConfig(_Section):
    """The network, its weights and where it runs.

    ``precision``: the network's number format (the frontend is always
    float32). ``auto`` = float16 on CUDA, float32 on CPU (exact parity);
    ``bfloat16`` on CPU needs native support (AVX512-BF16 or AMX) and is
    refused without it; ``float16`` needs CUDA. ``docs/model.md`` gives the
    measured error of each. The old ``fp16: true|false`` key is still read
    (``true`` -> ``auto``, ``false`` -> ``float32``) with a deprecation warning.

    ``float32_stages``: residual stages or blocks (``layer1``, ``layer4.0``...)
    kept float32 under a reduced precision; unset or ``[]`` = none, every
    stage reduced (the fastest; bf16 flipped no decision on the shared
    recordings and clips). ``[layer1.0, layer4]`` brings the demo network's
    p99 score error from ~5e-3 to ~2e-3 at 39% of the multiply-adds in
    float32; ``docs/model.md`` has the trade-off and the command that
    measures it for your weights.
    """

    weights: Path | None = None
    architecture: Literal["auto", "resnet18", "resnet50"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Precision = "auto"
    batch_size: int = Field(default=16, ge=1, le=1024)
    cpu_threads: int = Field(default=0, ge=0, le=1024)
    channels_last: bool = True
    fuse_batchnorm: bool = True
    max_batch_wait_s: Annotated[float, Field(ge=0, le=60)] = 0.25
    # The same names as ``models[].id``, which this becomes (model_entries).
    model_id: str = Field(default="orcahello-srkw", pattern=MODEL_ID_PATTERN)
    float32_stages: list[StageName] | None = None

    @model_validator(mode="before")
    @classmethod
    def _map_fp16(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "fp16" not in data:
            return data
        data = dict(data)
        fp16 = data.pop("fp16")
        if not isinstance(fp16, bool):
            raise ValueError(f"fp16 must be true or false, got {fp16!r} "
                             "(deprecated: use precision: auto|float32|bfloat16|float16)")
        mapped = "auto" if fp16 else "float32"
        if "precision" in data:
            log.warning("model.fp16 is deprecated and ignored: model.precision (%s) is set",
                        data["precision"])
        else:
            log.warning("model.fp16 is deprecated: read fp16: %s as precision: %s",
                        str(fp16).lower(), mapped)
            data["precision"] = mapped
        return data


BackendName = Literal["orcahello-resnet", "transformers"]
ModelRole = Literal["primary", "shadow", "secondary"]


class RuleConfig(_Section):
    """One model's decision rule over its target-label window scores.

    ``per_second`` is OrcaHello's production rule (:mod:`listener.detection.rule`);
    ``mean_thresholded`` and ``mean_top_k`` are the file-level strategies of
    OrcaHello's newer inference code, applied per clip:

    * ``mean_thresholded``: windows scoring above ``local_threshold`` are
      positive; a detection needs ``global_threshold`` of them; confidence is
      100 x their mean;
    * ``mean_top_k``: confidence is 100 x the mean of the ``top_k`` highest
      window scores; a detection when that mean reaches ``top_k_threshold``.
    """

    strategy: Literal["per_second", "mean_thresholded", "mean_top_k"] = "per_second"
    local_threshold: float = Field(default=0.5, ge=0, le=1)
    global_threshold: int = Field(default=3, ge=1)
    top_k: int = Field(default=3, ge=1)
    top_k_threshold: float = Field(default=0.5, ge=0, le=1)


class ModelEntry(ModelConfig):
    """One model of ``models:``: a backend, its weights, windows, rule and role.

    Unset ``window_s``/``hop_s``/``rule`` fall back to the ``detection``
    section (for the ResNet) or to the backend's own defaults (3 s every 2 s
    for ``transformers``, as OrcaHello runs its transformer); unset
    ``target_labels`` means ``("call",)`` for the ResNet and every label except
    OrcaHello's negative ones for other backends.
    """

    id: str = Field(pattern=MODEL_ID_PATTERN)
    # An entry's id is ``id``; leaving ``model_id`` out of a dump lets it load back.
    model_id: str = Field(default="orcahello-srkw", pattern=MODEL_ID_PATTERN, exclude=True)
    backend: BackendName = "orcahello-resnet"
    role: ModelRole = "primary"
    target_labels: tuple[str, ...] | None = None
    window_s: Positive | None = None
    hop_s: Positive | None = None
    rule: RuleConfig | None = None

    @model_validator(mode="after")
    def _check_entry(self) -> ModelEntry:
        if "model_id" in self.model_fields_set:
            raise ValueError("set 'id' here, not 'model_id'")
        if self.window_s is not None and self.hop_s is not None \
                and (problem := hop_problem(self.window_s, self.hop_s)) is not None:
            raise ValueError(problem)
        if self.target_labels is not None and not self.target_labels:
            raise ValueError("target_labels must name at least one label")
        return self

    def model_config_view(self) -> ModelConfig:
        """This entry as the plain ``model`` section (what ``Scorer`` takes)."""
        fields = {k: getattr(self, k) for k in ModelConfig.model_fields if k != "model_id"}
        return ModelConfig(**fields, model_id=self.id)


def check_model_list(models: tuple[ModelEntry, ...]) -> None:
    if not models:
        raise ValueError("models must list at least one model")
    seen: set[str] = set()
    for m in models:
        if m.id in seen:
            raise ValueError(f"two models have the id {m.id!r}; each id must be unique")
        seen.add(m.id)
    primaries = [m.id for m in models if m.role == "primary"]
    if len(primaries) != 1:
        raise ValueError(f"exactly one model must have role 'primary' (it emits detections), "
                         f"found {len(primaries)}: {primaries or 'none'}")
