"""The command line's progress display (a :class:`~listener.pipeline.contracts.Progress`)."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """A one-line progress bar on stderr, only when it is a terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, done: float, total: float | None) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and (total is None or done < total):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        if total:
            frac = min(done / total, 1.0)
            bar = "#" * int(frac * 30)
            eta = (total - done) / rate if rate > 0 else 0.0
            text = (f"\r{self.label} [{bar:<30}] {100 * frac:5.1f}% "
                    f"{rate:6.1f}x real time  ETA {eta:5.0f} s")
        else:
            text = f"\r{self.label} {done:8.1f} s  {rate:6.1f}x real time"
        sys.stderr.write(text)
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
