"""What the benchmark scripts share (run them as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import platform
import resource
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The bundled real recording (L pod calls) the benchmarks loop into long streams.
RECORDING = ROOT / "listener" / "data" / "lpod_orcasound_22050hz.wav"


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (ffmpeg)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (benchmarks record it with their figures)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
