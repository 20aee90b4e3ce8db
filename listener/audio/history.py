"""The stream's recent audio, indexed by stream time, for clips with context.

The decoder appends every block of mono samples (native rate) with its
stream and offset; the clip sink later cuts ``[clip start - before, clip end
+ after]`` out of it, waiting with :meth:`AudioHistory.wait_until` for the
"after" part to arrive.

Audio is held as *runs*: contiguous stretches of one stream at one rate. A
gap, a decoder restart at another offset or a new stream starts a new run
and keeps the old ones, so a clip decided after a gap still finds its own
audio, and :meth:`get` only ever returns samples from inside the range asked
for (from the one run that overlaps it most; never spliced across a hole).

How much is held: the newest ``max_s`` seconds, and beyond that everything
from the *hold point* on (:meth:`hold`: the pipeline sets it to the start of
the last clip it decided, so audio decoded far ahead of scoring, after an
outage or a restart behind the live edge, is still there when its clip is
decided), up to ``hard_max_s``. Runs of other streams after the hold point's
run are newer audio and kept with it; only runs before it are dropped first.

``append`` and ``reset`` may be called from any thread (a decoder thread);
waiters are woken on their own event loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class _Run:
    key: str
    start_s: float
    sr: int
    chunks: deque[np.ndarray] = field(default_factory=deque)
    n: int = 0

    @property
    def end_s(self) -> float:
        return self.start_s + self.n / self.sr

    def drop_head(self, count: int) -> int:
        """Drop up to ``count`` samples from the start; the number dropped."""
        dropped = 0
        while dropped < count and self.chunks:
            first = self.chunks[0]
            take = min(first.size, count - dropped)
            if take == first.size:
                self.chunks.popleft()
            else:
                # Copy the kept tail so the dropped head's memory is released.
                self.chunks[0] = first[take:].copy()
            dropped += take
        self.n -= dropped
        self.start_s += dropped / self.sr
        return dropped

    def slice(self, start_s: float, end_s: float) -> tuple[np.ndarray, float] | None:
        i0 = max(0, round((start_s - self.start_s) * self.sr))
        i1 = min(self.n, round((end_s - self.start_s) * self.sr))
        if i1 <= i0:
            return None
        out = np.empty(i1 - i0, dtype=np.int16)
        pos = filled = 0  # pos: index of the current chunk's first sample
        for chunk in self.chunks:
            lo, hi = max(i0, pos), min(i1, pos + chunk.size)
            if lo < hi:
                out[filled:filled + hi - lo] = chunk[lo - pos:hi - pos]
                filled += hi - lo
            pos += chunk.size
            if pos >= i1:
                break
        return from_pcm16(out), self.start_s + i0 / self.sr


# libsndfile's scale between float and 16-bit samples (its float -> PCM_16 path).
_PCM16_SCALE = np.float32(32767.0)


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as 16-bit PCM (clipped), as the clip files keep them."""
    return np.rint(np.clip(samples, -1.0, 1.0) * _PCM16_SCALE).astype(np.int16)


def from_pcm16(samples: np.ndarray) -> np.ndarray:
    """16-bit PCM as float32; written back as PCM_16 it gives the same integers."""
    return samples.astype(np.float32) / _PCM16_SCALE


class AudioHistory:
    """Recent mono audio of a station's streams.

    Held as 16-bit PCM, the resolution the clip files have (half the memory
    of float32: the ring is most of a station's memory), returned as float32.

    Args:
        max_s: audio always kept (the newest seconds, all runs together).
        hard_max_s: the most ever kept, hold point or not (default ``max_s``).
    """

    def __init__(self, max_s: float, hard_max_s: float | None = None) -> None:
        if not max_s > 0:
            raise ValueError(f"max_s must be positive, got {max_s!r}")
        self.max_s = float(max_s)
        self.hard_max_s = max(self.max_s, float(hard_max_s or max_s))
        self._lock = threading.Lock()
        self._runs: list[_Run] = []
        self._hold: tuple[str, float] | None = None
        self._waiters: list[tuple[float, str | None, asyncio.Future[None],
                                  asyncio.AbstractEventLoop]] = []

    @property
    def sample_rate(self) -> int:
        """The rate of the newest audio (0 before the first append)."""
        return self._runs[-1].sr if self._runs else 0

    @property
    def available_from_s(self) -> float:
        """Stream offset of the oldest held sample of the newest run."""
        return self._runs[-1].start_s if self._runs else 0.0

    @property
    def available_until_s(self) -> float:
        """Stream offset just after the newest held sample (-inf when empty)."""
        with self._lock:
            return self._runs[-1].end_s if self._runs and self._runs[-1].n else float("-inf")

    @property
    def held_s(self) -> float:
        with self._lock:
            return sum(r.n / r.sr for r in self._runs)

    def append(self, offset_s: float, samples: np.ndarray, sample_rate: int,
               stream_key: str = "") -> None:
        """Add a block of ``(n,)`` samples starting at ``offset_s`` of ``stream_key``."""
        if samples.ndim != 1:
            raise ValueError(f"samples must be mono (n,), got shape {samples.shape}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate!r}")
        block = to_pcm16(np.asarray(samples, dtype=np.float32))
        with self._lock:
            run = self._runs[-1] if self._runs else None
            # Contiguity within one sample (plus float slack): offsets come from
            # sample counts upstream, so anything larger is a real discontinuity.
            tol = 1.0 / sample_rate + 1e-6
            if run is None or run.key != stream_key or run.sr != sample_rate \
                    or abs(offset_s - run.end_s) > tol:
                run = _Run(stream_key, float(offset_s), sample_rate)
                self._runs.append(run)
            if block.size:
                # Copy: the caller may reuse its buffer, and a view would pin it.
                run.chunks.append(block.copy() if block is samples else block)
                run.n += block.size
                self._trim()
            woken = [(fut, loop) for t, key, fut, loop in self._waiters
                     if self._reached(t, key)]
        for fut, loop in woken:
            loop.call_soon_threadsafe(_wake, fut)

    def hold(self, stream_key: str, offset_s: float) -> None:
        """Keep ``stream_key``'s audio from ``offset_s`` on, past ``max_s`` if need be."""
        with self._lock:
            self._hold = (stream_key, offset_s)

    def _trim(self) -> None:
        """Drop the oldest audio past ``max_s``, sparing the hold point's up to ``hard_max_s``."""
        held = sum(r.n / r.sr for r in self._runs)
        past_hold = False
        for run in list(self._runs):
            if held <= self.max_s:
                break
            keep_from = self._keep_from(run)
            if keep_from is not None:
                past_hold = True
                spare = max(0.0, keep_from - run.start_s)
            else:
                # A run after the hold point's (a new stream while the old
                # one's clip is pending) is newer audio: only hard_max_s trims it.
                spare = 0.0 if past_hold else float("inf")
            drop_s = max(min(held - self.max_s, spare), held - self.hard_max_s)
            if drop_s > 0:
                held -= run.drop_head(min(run.n, round(drop_s * run.sr))) / run.sr
            if not run.n and run is not self._runs[-1]:
                self._runs.remove(run)

    def _keep_from(self, run: _Run) -> float | None:
        if self._hold is None or self._hold[0] != run.key:
            return None
        return self._hold[1]

    def reset(self) -> None:
        """Forget everything."""
        with self._lock:
            self._runs.clear()

    def get(self, start_s: float, end_s: float,
            stream_key: str | None = None) -> tuple[np.ndarray, float] | None:
        """Held samples within ``[start_s, end_s)`` and the offset of the first.

        From the run (of ``stream_key``, when given) that overlaps the range
        most, clipped to it; ``None`` when nothing of the range is held.
        """
        got = self.get_with_rate(start_s, end_s, stream_key)
        return None if got is None else (got[0], got[1])

    def get_with_rate(self, start_s: float, end_s: float, stream_key: str | None = None
                      ) -> tuple[np.ndarray, float, int] | None:
        """As :meth:`get`, with the sample rate of the samples returned."""
        with self._lock:
            if end_s <= start_s:
                return None
            best, overlap = None, 0.0
            for run in self._runs:
                if stream_key is not None and run.key != stream_key:
                    continue
                o = min(end_s, run.end_s) - max(start_s, run.start_s)
                if o > overlap:
                    best, overlap = run, o
            if best is None:
                return None
            got = best.slice(start_s, end_s)
            return None if got is None else (got[0], got[1], best.sr)

    def _reached(self, t_s: float, key: str | None) -> bool:
        """Audio up to ``t_s`` is held, or will never come (the stream moved on)."""
        if not self._runs:
            return False
        newest = self._runs[-1]
        if key is not None and newest.key != key:
            return True
        return newest.n > 0 and newest.end_s >= t_s - 1e-9

    async def wait_until(self, t_s: float, timeout_s: float,
                         stream_key: str | None = None) -> bool:
        """Wait until audio up to offset ``t_s`` is held (or its stream ended).

        ``False`` on timeout.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (t_s, stream_key, fut, loop)
        with self._lock:
            if self._reached(t_s, stream_key):
                return True
            self._waiters.append(entry)
        try:
            await asyncio.wait_for(fut, timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._waiters.remove(entry)


def _wake(fut: asyncio.Future[None]) -> None:
    # Runs on the waiter's loop; the waiter may have timed out meanwhile.
    if not fut.done():
        fut.set_result(None)
