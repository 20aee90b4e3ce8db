"""Learning from a teacher model (``listener train --teacher W``): knowledge distillation.

An averaged ensemble ranks windows better than one network but costs each
member's compute per window (``benchmarks/bench_ensemble.py``: 1.9x in
bfloat16), which a fleet on two cores cannot spare. A single network trained
towards the ensemble's probabilities, as well as towards the labels, keeps
one network's cost and can keep part of the gain (Hinton et al., 2015,
"Distilling the knowledge in a neural network").

The target of each training window is ``(1 - w) * label + w * p_teacher``,
where ``p_teacher`` is the teacher's call probability on the very input the
student sees (the same augmented, masked spectrogram) and ``w`` is
``--teacher-weight``. The teacher runs in eval mode with no gradients, so a
run stays reproducible. The files the teacher learnt from count as files the
student learnt from (they stay out of its validation and go into its
lineage): its probabilities carry what it remembers of them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from listener.model.ensemble import load_network


def soft_targets(labels: Tensor, teacher_p: Tensor, weight: float) -> Tensor:
    """``(B,)`` labels (0/1) and teacher call probabilities -> ``(B, 2)`` target distributions."""
    p = (1.0 - weight) * labels.float() + weight * teacher_p.float()
    return torch.stack([1.0 - p, p], dim=1)


def distillation_loss(logits: Tensor, labels: Tensor, teacher_p: Tensor,
                      weight: float) -> Tensor:
    """Cross-entropy of the student's logits against :func:`soft_targets`."""
    return torch.nn.functional.cross_entropy(logits.float(),
                                             soft_targets(labels, teacher_p, weight))


class Teacher:
    """A frozen model (one network or an averaged ensemble) giving call probabilities.

    Args:
        weights: its weights file (``ModelLoadError`` if it does not load).
        device: where the student trains.
        dtype: the student's autocast format (``None``: float32); the teacher
            runs in it too, so it costs what a forward pass of the student does.
    """

    def __init__(self, weights: str, device: torch.device, dtype: torch.dtype | None) -> None:
        model, _ = load_network(weights)
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device, self.dtype = device, dtype

    def probabilities(self, x: Tensor) -> Tensor:
        """``(B, 1, H, W)`` model inputs -> ``(B,)`` float32 call probabilities."""
        with torch.no_grad(), torch.autocast(device_type=self.device.type,
                                             dtype=self.dtype or torch.float32,
                                             enabled=self.dtype is not None):
            return torch.softmax(self.model(x).float(), dim=1)[:, 1]
