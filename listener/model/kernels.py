"""One process-wide start-up step that makes torch's CPU maths repeatable.

torch on x86 sends ``log``, ``log10``, ``exp``, ``cos``, ``sqrt``, ``tanh``
and a few more float32/float64 functions to MKL's vector maths library, one
chunk per thread. MKL sets that library up on its first call in a process.
When that first call runs on two threads at once, one thread's chunk can be
computed by other code: measured on a 2-core Intel Xeon (torch 2.13.0, MKL
2024.2), the first ``torch.log10`` of 2 560 values gave other bits for the
second thread's 1 260 to 1 280 of them in 9 of 40 processes, and no later
call ever did. The frontend's first call is exactly such a call, so about one
process in ten computed other spectrograms (up to 0.09 dB apart) and trained
other weights than the next process, breaking "the same command gives the same
weights" across runs and restarts. One small call on one thread first settles
it: 40 of 40 processes then agreed (docs/frontend.md, "Bit for bit from one
process to the next").
"""

from __future__ import annotations

import functools

import torch

# Smaller than torch's grain for one thread, so each call runs on this thread alone.
_WARM_SIZE = 16


@functools.cache
def warm_vector_maths() -> None:
    """Make the process's first MKL vector-maths call a single-threaded one (once)."""
    for dtype in (torch.float32, torch.float64):
        x = torch.full((_WARM_SIZE,), 0.5, dtype=dtype)
        torch.log10(x)
        torch.cos(x)
