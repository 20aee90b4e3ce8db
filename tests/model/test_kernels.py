"""Torch's CPU maths gives the same bits in every process (listener.model.kernels)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from listener.model import kernels
from listener.model.frontend import Frontend
from listener.model.network import build_model

# The warm-up, then the process's first parallel vector-maths call. Without
# the warm-up, the second thread's share of that call had other bits in 9 of
# 40 processes run alone, and this test failed in 2 of 3 runs of 16 processes
# (2-core Intel Xeon). One process after another: a process busy beside it
# makes the race rarer. A one-core machine never races, and passes anyway.
_SCRIPT = """
import hashlib, torch
from listener.model.kernels import warm_vector_maths
torch.set_num_threads(2)
warm_vector_maths()
x = torch.rand(2560, generator=torch.Generator().manual_seed(1)) + 0.01
print(hashlib.sha256(torch.log10(x).numpy().tobytes()).hexdigest())
"""

PROCESSES = 24


@pytest.mark.slow
def test_every_process_computes_the_same_bits() -> None:
    digests = {subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                              timeout=120, check=True).stdout.strip()
               for _ in range(PROCESSES)}
    assert len(digests) == 1, f"{len(digests)} different results in {PROCESSES} processes"


@pytest.mark.parametrize("build", [Frontend, lambda: build_model("resnet18")],
                         ids=["frontend", "network"])
def test_building_a_frontend_or_a_network_warms_the_maths(build) -> None:
    kernels.warm_vector_maths.cache_clear()
    build()
    assert kernels.warm_vector_maths.cache_info().misses == 1
