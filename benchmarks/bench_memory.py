"""Peak memory of ``listener detect`` on a long file: one hour of 48 kHz stereo.

The file is decoded and scored as a stream, so memory stays flat whatever the
length. Runs the real CLI in a subprocess with a random-weights ResNet18
checkpoint and reports the child's peak RSS (ffmpeg's own, separately).

    python benchmarks/bench_memory.py [--minutes 60]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RECORDING, random_resnet18

from listener.audio.decode import find_ffmpeg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rec = work / "long.flac"
        subprocess.run([find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                        "-stream_loop", "-1", "-i", str(RECORDING), "-t", str(args.minutes * 60),
                        "-ar", "48000", "-ac", "2", "-c:a", "flac", str(rec)], check=True)
        weights = random_resnet18(work / "r18.safetensors")
        script = ("import resource, sys; from listener.cli import main; rc = main(sys.argv[1:]); "
                  "sys.stderr.write(f'PEAK_RSS_KB {resource.getrusage(resource.RUSAGE_SELF)"
                  ".ru_maxrss}\\n'); sys.exit(rc)")
        t = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", script, "detect", str(rec), "--weights",
                              str(weights), "--quiet", "--json", str(work / "out.json")],
                             capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - t
    peak = next(int(line.split()[1]) for line in res.stderr.splitlines()
                if line.startswith("PEAK_RSS_KB"))
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    sys.stdout.write(
        f"detect on {args.minutes:g} min of 48 kHz stereo: exit {res.returncode}, "
        f"{elapsed:.0f} s ({args.minutes * 60 / elapsed:.1f}x real time)\n"
        f"peak RSS of the listener process: {peak / 1024:.0f} MB "
        f"(largest child incl. ffmpeg: {children / 1024:.0f} MB)\n")


if __name__ == "__main__":
    main()
