"""The live stream (``GET /api/live``): computed once per station, shared by its viewers.

Each viewer used to compute its own 60 s spectrogram backfill (an FFT over
60 s of audio, about 100 MB of transient arrays): eight viewers took a
daemon's RSS from 678 MB to 1.2 GB. A :class:`LiveHub` per station now runs
one task while anyone watches: every ``tick_s`` it computes the columns of
the audio that arrived since the last tick, keeps the last ``backfill_s`` of
them (96 bytes a column) and sends one message, encoded once, to every
viewer. A new viewer's first message is that ring of columns and the score
points held, with no FFT of its own.

Per viewer the server holds at most ``max_queued`` messages (a viewer whose
queue overflows is dropped) plus what the transport and a small socket send
buffer hold; a viewer that stops reading is dropped by the write timeout (the
per-write timeout here, and the connection watchdog of :mod:`.guard`).

Message fields (unchanged): ``t``, ``station``, ``cols``, ``bins``,
``cols_per_s``, ``end_s`` (stream offset just after the last column),
``spec`` (base64 of ``cols x bins`` bytes) and ``scores``
(``[offset_s, utc, score]`` rows).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import time
from collections import deque
from typing import Any

from aiohttp import web

from listener.web import spectro
from listener.web.guard import LIMITS_KEY
from listener.web.views import LiveFeed, ScorePoint

logger = logging.getLogger(__name__)

COLS_PER_S = 8
BINS = 96
#: Socket send buffer of a live connection (the kernel doubles it): small, so
#: a viewer that stops reading shows as stalled after seconds, not minutes.
SEND_BUFFER = 16 * 1024


class Viewer:
    """One viewer's bounded queue of encoded messages."""

    def __init__(self, first: bytes, max_queued: int) -> None:
        self.max_queued = max_queued
        self.queue: deque[bytes] = deque([first])
        self.overflowed = False
        self.ready = asyncio.Event()
        self.ready.set()

    def push(self, message: bytes) -> None:
        if len(self.queue) >= self.max_queued:
            self.overflowed = True
        else:
            self.queue.append(message)
        self.ready.set()

    async def next(self) -> list[bytes] | None:
        """The queued messages, or ``None`` once the viewer fell too far behind."""
        await self.ready.wait()
        self.ready.clear()
        if self.overflowed:
            return None
        out = list(self.queue)
        self.queue.clear()
        return out


class LiveHub:
    """One station's live stream (see the module doc)."""

    def __init__(self, live: LiveFeed, station_id: str, *, tick_s: float = 1.0,
                 backfill_s: float = 60.0, max_queued: int = 8) -> None:
        self.live = live
        self.station_id = station_id
        self.tick_s = tick_s
        self.backfill_s = backfill_s
        self.max_queued = max_queued
        self.viewers: set[Viewer] = set()
        self._task: asyncio.Task[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self._ring: deque[bytes] = deque(maxlen=max(1, int(self.backfill_s * COLS_PER_S)))
        self._cursor = self.live.audio_until_s() - self.backfill_s
        self._end: float | None = None
        # The points held now go out in each viewer's first message.
        self._seq = self.live.scores_after(0)[1]

    def join(self) -> Viewer:
        """A new viewer; its first message is the shared backfill."""
        if self._task is None or self._task.done():
            self._reset()
            self._task = asyncio.create_task(self._run(), name=f"live-{self.station_id}")
        viewer = Viewer(self._snapshot(), self.max_queued)
        self.viewers.add(viewer)
        return viewer

    def leave(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)
        if not self.viewers and self._task is not None:
            self._task.cancel("no live viewers")
            self._task = None

    def _snapshot(self) -> bytes:
        points, seq = self.live.scores_after(0)
        # Only points up to the last tick: later ones come with the next tick.
        points = points[:max(0, len(points) - (seq - self._seq))]
        return self._encode(b"".join(self._ring), len(self._ring), points)

    def _encode(self, cols: bytes, n_cols: int, points: list[ScorePoint]) -> bytes:
        msg: dict[str, Any] = {
            "t": time.time(), "station": self.station_id, "cols": n_cols, "bins": BINS,
            "cols_per_s": COLS_PER_S, "end_s": self._end,
            "spec": base64.b64encode(cols).decode(),
            "scores": [[round(p.offset_s, 3), p.utc, round(p.score, 4)] for p in points]}
        return f"data: {json.dumps(msg)}\n\n".encode()

    async def _run(self) -> None:
        while True:
            message = await self._tick()
            for viewer in list(self.viewers):
                viewer.push(message)
            await asyncio.sleep(self.tick_s)

    async def _tick(self) -> bytes:
        live = self.live
        points, self._seq = live.scores_after(self._seq)
        until = live.audio_until_s()
        cols, n_cols = b"", 0
        if until - self._cursor >= 1.0 / COLS_PER_S:
            # At most a backfill's worth at once: bounded work and bytes.
            start = max(self._cursor, until - self.backfill_s)
            got = live.audio(start, until)
            if got is not None:
                samples, first, rate = got
                arr = await asyncio.to_thread(spectro.columns, samples, rate,
                                              cols_per_s=COLS_PER_S, bins=BINS)
                n_cols, cols = arr.shape[0], arr.tobytes()
                self._ring.extend(cols[i * BINS:(i + 1) * BINS] for i in range(n_cols))
                self._cursor = first + n_cols / COLS_PER_S
                self._end = self._cursor
        elif until < self._cursor - 30:
            self._cursor = until  # the history restarted (a gap): follow it
        return self._encode(cols, n_cols, points)


async def serve(hub: LiveHub, request: web.Request) -> web.StreamResponse:
    """Stream ``hub`` to one viewer until it leaves, falls behind or stops reading."""
    limits = request.app.get(LIMITS_KEY)
    write_timeout_s = limits.write_timeout_s if limits is not None else 10.0
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    _small_send_buffer(request)
    viewer = hub.join()
    try:
        while (batch := await viewer.next()) is not None:
            for message in batch:
                async with asyncio.timeout(write_timeout_s):
                    await response.write(message)
        logger.info("live viewer of %s dropped: %d messages behind", hub.station_id,
                    hub.max_queued)
    except TimeoutError:
        logger.info("live viewer of %s dropped: not reading for %g s", hub.station_id,
                    write_timeout_s)
    except (ConnectionError, asyncio.CancelledError):
        pass  # the viewer left, or the server is stopping
    finally:
        hub.leave(viewer)
    if request.transport is not None:
        request.transport.abort()  # nothing more to say; don't wait on a stuck peer
    return response


def _small_send_buffer(request: web.Request) -> None:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
