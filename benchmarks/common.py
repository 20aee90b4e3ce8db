"""What the benchmark scripts share (run them as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import platform
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The checkout this benchmark lives in, not whichever one is installed
# (editable installs of another worktree would be measured instead).
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))
#: The bundled real recording (L pod calls) the benchmarks loop into long streams.
RECORDING = ROOT / "listener" / "data" / "lpod_orcasound_22050hz.wav"


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (ffmpeg)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def cpu_model() -> str:
    """The host's CPU model, to print beside every figure."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


#: CPU features that decide the precision a host runs fast.
FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")


def host_flags() -> str:
    """Which of :data:`FEATURES` this CPU has, e.g. ``avx2 avx512f -avx512_bf16 ...``."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU flags unknown"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith(("flags", "Features"))), [])
    return "flags: " + " ".join(f if f in flags else f"-{f}" for f in FEATURES)


def random_resnet18(path: Path) -> Path:
    """A ResNet18 with random weights at ``path`` (speed and memory do not need trained ones)."""
    from safetensors.torch import save_file

    from listener.model.network import build_model

    save_file({k: v.contiguous() for k, v in build_model("resnet18").state_dict().items()},
              str(path))
    return path
