"""Windows at their native rate -> model-rate waves, one batched call per rate and length.

The station, its model lanes and ``compare`` hand the windows cut from one
decoded block to :func:`prepare_windows`, which calls the model's batch
step (:meth:`Frontend.prepare_batch`, a backend's ``prepare_batch``) once per
run of equal rate and length instead of once per window: the resampling
filter is designed once per rate pair and the whole group is filtered in one
call that releases the GIL. The numbers are the per-window ones, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from listener.audio.windows import Window
from listener.pipeline.contracts import PrepareBatchFn


def prepare_windows(prepare_batch: PrepareBatchFn, windows: Sequence[Window]) -> list[np.ndarray]:
    """Each window's prepared wave, in the order of ``windows``.

    Windows of one decoded block share a rate and a length; a different rate
    (a codec change mid-stream) or length (a shorter last window) only splits
    the call, never reorders the result.

    Args:
        prepare_batch: ``(windows of one rate and length, rate) -> (B, samples')``.
        windows: cut windows, any mix of rates and lengths.

    Returns:
        One 1-D float32 wave per window (rows of the group's batch array).
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, w in enumerate(windows):
        groups.setdefault((w.sample_rate, w.samples.shape[-1]), []).append(i)
    out: list[np.ndarray] = [_EMPTY] * len(windows)
    for (rate, _length), members in groups.items():
        waves = prepare_batch([windows[i].samples for i in members], rate)
        for i, wave in zip(members, waves, strict=True):
            out[i] = wave
    return out


_EMPTY = np.zeros(0, dtype=np.float32)
