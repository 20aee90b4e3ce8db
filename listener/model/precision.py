"""Which number format the network runs in, decided once per host and device.

``model.precision`` (``auto | float32 | bfloat16 | float16``) becomes an
:class:`ExecutionPlan`: the dtype of the network's body and the layout
options that go with it. The decision is a pure function of the request, the
device and the CPU's feature flags, so every branch (CUDA ones included) is
tested on any machine.

Why these rules:

* ``auto`` is float16 on CUDA (tensor cores, ~1e-3 score error) and float32
  on a CPU, so the default on a CPU stays exactly the reference numbers;
* ``bfloat16`` on a CPU is only fast where the CPU does bf16 dot products
  natively (AVX512-BF16, AMX). Elsewhere oneDNN emulates it and the network
  runs several times *slower* than float32, so it is refused with a message
  rather than silently slow;
* ``float16`` on a CPU has no fast kernels and a narrow range: CUDA only;
* a reduced-precision body always has its BatchNorm folded (in float64,
  before the cast: folding after would compound two roundings) and
  channels-last memory (oneDNN's and cuDNN's fast layout); the classifier
  head stays float32, it costs nothing and keeps the logits precise;
* under ``bfloat16`` every residual stage runs bf16 by default: bf16's
  8-bit mantissa moves the trained demo network's scores by p99 ~5e-3 but
  flips no decision on the shared real recordings and clips, and decisions
  are what an operator sees. ``model.float32_stages`` (e.g. ``[layer1.0,
  layer4]``: p99 ~2e-3, at 39% of the multiply-adds in float32) remains for
  those who want the scores closer; ``docs/model.md`` has both;
* ``auto`` stays float32 on a CPU even where bf16 is native; there,
  :func:`startup_hint` tells the operator once how much faster ``bfloat16``
  would run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from listener.errors import ModelLoadError

log = logging.getLogger(__name__)

#: /proc/cpuinfo flags that mean the CPU multiplies bf16 natively.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")

#: bfloat16 over float32 on a 2-core Intel Xeon with AMX (issue 22), every
#: stage bf16: the network alone, and ``listener detect`` on a 5-minute file.
REFERENCE_BF16_SPEEDUP = {"network": 3.5, "detect": 1.8}

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

#: Residual stages (``layer4``) or single blocks (``layer1.0``) kept float32
#: under bfloat16 when ``model.float32_stages`` is unset: none. Decisions, not
#: a score bound, judge bf16 (docs/model.md, "Precision"): all-bf16 flips no
#: decision on the shared recordings and clips with the trained demo weights.
BF16_FLOAT32_STAGES: tuple[str, ...] = ()
#: The choice that keeps the demo network's score error p99 <= 2e-3, for
#: ``model.float32_stages`` (the default before decisions judged bf16).
BF16_PRECISE_STAGES: tuple[str, ...] = ("layer1.0", "layer4")


@dataclass(frozen=True)
class ExecutionPlan:
    """How the network runs: body dtype and the options forced by it."""

    precision: str  # the resolved name: float32, bfloat16 or float16
    dtype: torch.dtype
    fuse_batchnorm: bool
    channels_last: bool
    # Residual stages / blocks run in float32 although ``dtype`` is reduced.
    float32_stages: tuple[str, ...] = ()


def cpu_flags(path: Path = CPUINFO) -> frozenset[str] | None:
    """The feature flags of the first CPU in ``/proc/cpuinfo``; ``None`` if unreadable."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16).

    Args:
        flags: CPU feature flags (for tests); ``None`` reads ``/proc/cpuinfo``
            and, where that is missing (not Linux), asks oneDNN.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        # oneDNN's own check; it also says yes on plain AVX-512 (emulated, slower).
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return any(f in flags for f in BF16_FLAGS)


def cuda_supports_bf16() -> bool:
    """Whether the current CUDA device has bf16 tensor cores (Ampere or newer)."""
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def plan_execution(requested: str, device: torch.device | str, *, fuse_batchnorm: bool = True,
                   channels_last: bool = True, native_bf16: bool | None = None,
                   cuda_bf16: bool | None = None,
                   float32_stages: Sequence[str] | None = None) -> ExecutionPlan:
    """Resolve ``model.precision`` for ``device``.

    Args:
        requested: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        device: where the network runs.
        fuse_batchnorm, channels_last: the config's wishes, honoured in float32;
            reduced precision forces both on.
        native_bf16, cuda_bf16: overrides of the hardware checks (tests);
            ``None`` asks :func:`cpu_has_native_bf16` / :func:`cuda_supports_bf16`.
        float32_stages: stages kept float32 in a reduced precision (benchmarks
            comparing choices); ``None`` = :data:`BF16_FLOAT32_STAGES` under
            bfloat16, none under float16 (10-bit mantissa, 8x finer).

    Raises:
        ModelLoadError: a precision this device cannot run well, saying why and
            what to use instead.
    """
    kind = torch.device(device).type
    if requested == "auto":
        requested = "float16" if kind == "cuda" else "float32"
    if requested not in _DTYPES:
        raise ModelLoadError(f"model.precision must be auto, float32, bfloat16 or float16, "
                             f"got {requested!r}")
    if requested == "float16" and kind != "cuda":
        raise ModelLoadError("model.precision float16 needs a CUDA device (CPUs have no fast "
                             "float16 kernels); on a CPU use float32, or bfloat16 where the "
                             "CPU has AVX512-BF16/AMX")
    if requested == "bfloat16" and kind == "cpu":
        native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
        if not native:
            raise ModelLoadError(
                "model.precision bfloat16 refused: this CPU has no native bfloat16 "
                f"(none of the flags {', '.join(BF16_FLAGS)} in /proc/cpuinfo), so it "
                "would run several times slower than float32; use float32 (or auto)")
    if requested == "bfloat16" and kind == "cuda":
        if not (cuda_supports_bf16() if cuda_bf16 is None else cuda_bf16):
            raise ModelLoadError("model.precision bfloat16 needs a CUDA device of compute "
                                 "capability 8.0 or newer; use float16 (or auto)")
    reduced = requested != "float32"
    if not reduced:
        stages: tuple[str, ...] = ()
    elif float32_stages is not None:
        stages = tuple(float32_stages)
    else:
        stages = BF16_FLOAT32_STAGES if requested == "bfloat16" else ()
    return ExecutionPlan(precision=requested, dtype=_DTYPES[requested],
                         fuse_batchnorm=fuse_batchnorm or reduced,
                         channels_last=channels_last or reduced, float32_stages=stages)


def startup_hint(requested: str, device: torch.device | str, *,
                 flags: frozenset[str] | None = None) -> str | None:
    """What to tell the operator of a station that runs float32 where bf16 is native.

    ``auto`` stays float32 on a CPU (exact parity with the reference); on a
    CPU that computes bfloat16 natively this says how much faster
    ``precision: bfloat16`` would be, from :data:`REFERENCE_BF16_SPEEDUP`.
    (A timed probe at load was tried: one convolution's bf16/float32 ratio
    ranged 0.5x-45x on a busy 2-core host, and one layer's ratio is not the
    network's: a table measured end to end says more.) ``None`` anywhere
    else (CUDA, another precision asked for, no native bf16).

    Args:
        requested: ``model.precision`` as configured.
        device: where the network runs.
        flags: the CPU's feature flags (tests); ``None`` reads ``/proc/cpuinfo``.
    """
    if requested != "auto" or torch.device(device).type != "cpu":
        return None
    flags = cpu_flags() if flags is None else flags
    if flags is None or not cpu_has_native_bf16(flags):
        return None
    ref = REFERENCE_BF16_SPEEDUP
    native = ", ".join(f for f in BF16_FLAGS if f in flags)
    amx = "" if "amx_bf16" in flags else " (measured with AMX; AVX512-BF16 alone gains less)"
    return (f"this CPU computes bfloat16 natively ({native}): model.precision: bfloat16 "
            f"would run the network about {ref['network']:g}x faster and `listener detect` "
            f"{ref['detect']:g}x end to end (2-core Xeon reference{amx}), flipping no "
            "decision on the shared test recordings (docs/model.md, \"Precision\"); "
            "precision: auto keeps float32 for exact parity")


# One hint per process, however many stations load a scorer: a fleet of 50
# would otherwise repeat it 50 times.
_hint_lock = threading.Lock()
_hint_logged: list[str] = []


def log_startup_hint(requested: str, device: torch.device | str, *,
                     flags: frozenset[str] | None = None) -> str | None:
    """:func:`startup_hint`, logged at INFO the first time this process gets one."""
    with _hint_lock:
        if _hint_logged:
            return None
        hint = startup_hint(requested, device, flags=flags)
        if hint is not None:
            _hint_logged.append(hint)
            log.info("%s", hint)
        return hint
