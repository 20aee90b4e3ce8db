"""The learning rate's schedule, and when a run without gains stops."""

from __future__ import annotations

import math

#: The share of a run's steps over which the learning rate climbs to its peak.
WARMUP_FRACTION = 0.15


def warmup_steps(total: int, warmup_fraction: float = WARMUP_FRACTION) -> int:
    return max(1, round(warmup_fraction * total))


def warmup_cosine(step: int, total: int, warmup_fraction: float = WARMUP_FRACTION) -> float:
    """The learning-rate factor: linear warm-up, then cosine decay to zero at ``total``."""
    warm = warmup_steps(total, warmup_fraction)
    return min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def warmup_epochs(epochs: int, steps_per_epoch: int) -> int:
    """The epochs in which the learning rate is still climbing (the last one partly)."""
    return math.ceil(warmup_steps(epochs * steps_per_epoch) / steps_per_epoch)


def out_of_patience(epoch: int, best_epoch: int, patience: int, warm_epochs: int) -> bool:
    """No gain for ``patience`` epochs after ``epoch``, counted from the best epoch or
    from the end of the warm-up (``warm_epochs``), whichever is later.

    The figure dips while the rate climbs: both from-scratch demo runs lost about 0.08
    between epochs 8 and 25 and recovered later; counted from epoch 8, a patience of 20
    would have stopped one of them at epoch 28, at 0.81 on its way to 0.955.
    """
    return epoch - max(best_epoch, warm_epochs) >= patience
