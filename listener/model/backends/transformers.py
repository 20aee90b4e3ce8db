"""``transformers``: any Hugging Face audio classifier saved with ``save_pretrained``.

``AutoFeatureExtractor`` + ``AutoModelForAudioClassification`` from a local
folder (``local_files_only``: never the hub at run time), at the extractor's
own sampling rate, with the config's ``id2label`` as label names. Windows are
downmixed and resampled each as if alone (like the ResNet path; one batched
filter call per rate, :func:`listener.model.dsp.prepare_batch`), then batched
``batch_size`` at a time under ``inference_mode``; autocast in
``model.precision``'s format, planned as for the ResNet (``auto``: float16 on
CUDA, float32 on a CPU; ``bfloat16`` on a CPU with native bf16). Probabilities are the softmax of
the logits, or the sigmoid for a ``multi_label_classification`` model.

``transformers`` is an optional extra: ``pip install 'listener[transformers]'``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from listener.errors import ModelLoadError
from listener.model import dsp
from listener.model.backends.base import ModelPlan, PlannedBackend
from listener.model.precision import plan_execution
from listener.model.scorer import select_device

log = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'listener[transformers]'"


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise ModelLoadError(f"backend 'transformers' needs the optional extra: "
                             f"{EXTRA_HINT} ({err})") from err
    # Its per-load progress bars would flood a daemon's log.
    transformers.utils.logging.disable_progress_bar()
    return transformers


class TransformersBackend(PlannedBackend):
    """A local ``AutoModelForAudioClassification`` behind the backend interface."""

    def __init__(self, plan: ModelPlan) -> None:
        tf = _import_transformers()
        entry = plan.entry
        if entry.weights is None:
            raise ModelLoadError(f"model {plan.id}: backend 'transformers' needs weights "
                                 f"(a save_pretrained folder)")
        folder = str(entry.weights)
        try:
            self.extractor = tf.AutoFeatureExtractor.from_pretrained(
                folder, local_files_only=True)
            model = tf.AutoModelForAudioClassification.from_pretrained(
                folder, local_files_only=True)
        except Exception as err:
            # transformers and safetensors raise many types for a bad folder
            # (RuntimeError for weights that don't fit config.json,
            # SafetensorError for a corrupt file): any of them is a model that
            # cannot load, never a traceback that names neither folder nor model.
            raise ModelLoadError(f"model {plan.id}: {folder}: cannot load a transformers audio "
                                 f"classifier: {type(err).__name__}: {err}") from err
        self.plan = plan
        self.device = select_device(entry.device)
        self.model = model.to(self.device).eval()
        # model.precision as for the ResNet (refused where the device can't run it);
        # transformers models run it under autocast rather than converted weights.
        precision = plan_execution(entry.precision, self.device)
        self.autocast = None if precision.precision == "float32" else precision.dtype
        self._rate = int(getattr(self.extractor, "sampling_rate", 0) or 0)
        if self._rate <= 0:
            raise ModelLoadError(f"{folder}: the feature extractor states no sampling_rate")
        n = int(model.config.num_labels)
        self._labels = tuple(str(model.config.id2label[i]) for i in range(n))
        if self._labels != plan.labels:
            raise ModelLoadError(f"{folder}: the model's labels {list(self._labels)} differ "
                                 f"from its config.json id2label {list(plan.labels)}")
        self.multi_label = model.config.problem_type == "multi_label_classification"
        self._info: dict[str, Any] = {
            "id": plan.id, "backend": "transformers", "role": plan.role,
            "weights": folder, "architecture": type(model).__name__,
            "labels": list(self._labels), "sample_rate": self._rate,
            "device": str(self.device),
            "dtype": str(self.autocast or torch.float32).removeprefix("torch."),
            "parameter_count": sum(p.numel() for p in model.parameters()),
        }
        log.info("transformers model %s ready: %s, %d labels at %d Hz on %s", plan.id,
                 self._info["architecture"], n, self._rate, self.device)

    @property
    def sample_rate(self) -> int:
        return self._rate

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels

    @property
    def min_samples(self) -> int:
        return 1

    def prepare(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        return dsp.resample(dsp.downmix(samples), sample_rate, self._rate)

    def prepare_batch(self, windows: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        # Only downmix and resampling happen here, as in prepare; the
        # extractor's own steps (normalising, padding) run in predict, on the
        # whole batch.
        return dsp.prepare_batch(windows, sample_rate, self._rate)

    def predict(self, waves: np.ndarray) -> np.ndarray:
        waves = np.asarray(waves, dtype=np.float32)
        if waves.ndim != 2:
            raise ValueError(f"expected waves of shape (batch, samples), got {waves.shape}")
        out = []
        with torch.inference_mode():
            for start in range(0, waves.shape[0], self.plan.entry.batch_size):
                chunk = list(waves[start:start + self.plan.entry.batch_size])
                inputs = self.extractor(chunk, sampling_rate=self._rate, return_tensors="pt")
                inputs = {k: v.to(self.device) for k, v in inputs.items()
                          if isinstance(v, torch.Tensor)}
                with torch.autocast(device_type=self.device.type, dtype=self.autocast,
                                    enabled=self.autocast is not None):
                    logits = self.model(**inputs).logits
                # float32 before the softmax: p near 0/1 needs it under fp16.
                logits = logits.float()
                probs = torch.sigmoid(logits) if self.multi_label else logits.softmax(-1)
                out.append(probs.cpu())
        if not out:
            return np.zeros((0, len(self._labels)), dtype=np.float64)
        return torch.cat(out).numpy().astype(np.float64)
