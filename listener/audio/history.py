"""A bounded ring of the stream's recent audio, for clips with context.

The decoder appends every block of mono samples (native rate) with its
stream offset; the clip sink later cuts ``[clip start - before, clip end +
after]`` out of it, waiting with :meth:`AudioHistory.wait_until` for the
"after" part to arrive. The held audio is always one contiguous run: a block
that does not continue the previous one (a gap, a jump back, a new sample
rate) starts the history afresh, so :meth:`get` never has to splice a hole.

``append`` and ``reset`` may be called from any thread (a decoder thread);
waiters are woken on their own event loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque

import numpy as np

logger = logging.getLogger(__name__)


class AudioHistory:
    """The last ``max_s`` seconds of mono float32 audio of one stream.

    Args:
        max_s: how much audio to keep; older samples are dropped on append.
    """

    def __init__(self, max_s: float) -> None:
        if not max_s > 0:
            raise ValueError(f"max_s must be positive, got {max_s!r}")
        self.max_s = float(max_s)
        self._lock = threading.Lock()
        self._chunks: deque[np.ndarray] = deque()
        self._start_s = 0.0  # stream offset of the first held sample
        self._n = 0  # samples held
        self._sr = 0
        self._waiters: list[tuple[float, asyncio.Future[None], asyncio.AbstractEventLoop]] = []

    @property
    def sample_rate(self) -> int:
        """The rate of the held audio (0 before the first append)."""
        return self._sr

    @property
    def available_from_s(self) -> float:
        """Stream offset of the oldest held sample."""
        return self._start_s

    @property
    def available_until_s(self) -> float:
        """Stream offset just after the newest held sample (-inf when empty)."""
        with self._lock:
            return self._end_s() if self._n else float("-inf")

    def _end_s(self) -> float:
        return self._start_s + self._n / self._sr if self._sr else self._start_s

    def append(self, offset_s: float, samples: np.ndarray, sample_rate: int) -> None:
        """Add a block of ``(n,)`` samples starting at stream offset ``offset_s``."""
        if samples.ndim != 1:
            raise ValueError(f"samples must be mono (n,), got shape {samples.shape}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate!r}")
        block = np.asarray(samples, dtype=np.float32)
        with self._lock:
            # Contiguity within one sample (plus float slack): offsets come from
            # sample counts upstream, so anything larger is a real discontinuity.
            tol = 1.0 / sample_rate + 1e-6
            if self._n and (sample_rate != self._sr or abs(offset_s - self._end_s()) > tol):
                logger.debug("audio history restarts at %.3f s (held until %.3f s)",
                             offset_s, self._end_s())
                self._clear()
            if not self._n:
                self._start_s = float(offset_s)
                self._sr = sample_rate
            if block.size:
                # Copy: the caller may reuse its buffer, and a view would pin it.
                self._chunks.append(block.copy() if block is samples else block)
                self._n += block.size
                self._trim()
            end = self._end_s()
            woken = [(fut, loop) for t, fut, loop in self._waiters if end >= t - 1e-9]
        for fut, loop in woken:
            loop.call_soon_threadsafe(_wake, fut)

    def _trim(self) -> None:
        limit = round(self.max_s * self._sr)
        excess = self._n - limit
        while excess > 0 and self._chunks:
            first = self._chunks[0]
            if first.size <= excess:
                self._chunks.popleft()
                drop = first.size
            else:
                # Copy the kept tail so the dropped head's memory is released.
                self._chunks[0] = first[excess:].copy()
                drop = excess
            self._n -= drop
            self._start_s += drop / self._sr
            excess -= drop

    def _clear(self) -> None:
        self._chunks.clear()
        self._n = 0

    def reset(self) -> None:
        """Forget everything (a discontinuity in the stream)."""
        with self._lock:
            self._clear()

    def get(self, start_s: float, end_s: float) -> tuple[np.ndarray, float] | None:
        """The held samples within ``[start_s, end_s)`` and the offset of the first.

        Clipped to what is still held; ``None`` when nothing of the range is.
        """
        with self._lock:
            if not self._n or end_s <= start_s:
                return None
            i0 = max(0, round((start_s - self._start_s) * self._sr))
            i1 = min(self._n, round((end_s - self._start_s) * self._sr))
            if i1 <= i0:
                return None
            out = np.empty(i1 - i0, dtype=np.float32)
            pos = 0  # index of the current chunk's first sample
            filled = 0
            for chunk in self._chunks:
                lo, hi = max(i0, pos), min(i1, pos + chunk.size)
                if lo < hi:
                    out[filled:filled + hi - lo] = chunk[lo - pos:hi - pos]
                    filled += hi - lo
                pos += chunk.size
                if pos >= i1:
                    break
            return out, self._start_s + i0 / self._sr

    async def wait_until(self, t_s: float, timeout_s: float) -> bool:
        """Wait until audio up to offset ``t_s`` is held; ``False`` on timeout."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (t_s, fut, loop)
        with self._lock:
            if self._n and self._end_s() >= t_s - 1e-9:
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
