"""A whole-body deadline for streamed HTTP responses (``FetchConfig.max_fetch_s``).

The read timeout bounds each wait for data; a server trickling a byte now
and then passes it for ever. :class:`Deadline` ends such a download at the
deadline itself, from a timer thread, and :func:`body_chunks` reads what
has arrived so the bytes counted are the bytes received. One
:class:`DeadlineWatch` thread per HTTP client keeps every deadline.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator

import requests


def body_chunks(resp: requests.Response, size: int) -> Iterator[bytes]:
    """The body as it arrives: each read returns what the socket has (up to ``size``),
    so the bytes counted are the bytes received, not whole chunks."""
    raw = resp.raw
    read1 = getattr(raw, "read1", None)
    if read1 is None:  # urllib3 1.x: no read1; whole chunks (the deadline still cuts them)
        yield from resp.iter_content(chunk_size=size)
        return
    while chunk := read1(size):
        yield chunk


class Deadline:
    """Shuts a response's socket down when its time is up (``expired`` then).

    ``shutdown`` wakes a ``recv`` blocked in another thread, where ``close``
    would not; the attempt then fails as "too slow" and is retried. Made by
    :meth:`DeadlineWatch.watch`, whose one thread serves every fetch.
    """

    def __init__(self, resp: requests.Response, watch: DeadlineWatch) -> None:
        self._resp = resp
        self._watch = watch
        self.expired = False
        self.cancelled = False

    def fire(self) -> None:
        self.expired = True
        sock = _socket_of(self._resp)
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
            else:
                self._resp.close()
        except OSError:
            pass  # already closed: the read has ended anyway

    def cancel(self) -> None:
        self._watch.cancel(self)


class DeadlineWatch:
    """One thread that fires every pending :class:`Deadline` of a client in time.

    A timer thread per fetch would start and stop a thread for every poll of
    every station; this one sleeps until the earliest deadline (or a new one).
    """

    def __init__(self, name: str = "fetch-deadlines") -> None:
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._count = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, resp: requests.Response, after_s: float) -> Deadline:
        """A deadline ``after_s`` from now for ``resp``'s body."""
        deadline = Deadline(resp, self)
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, after_s),
                                        next(self._count), deadline))
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name=self._name,
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
        return deadline

    def cancel(self, deadline: Deadline) -> None:
        with self._cond:
            deadline.cancelled = True  # dropped from the heap when it comes up

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                when = self._heap[0][0]
                wait = when - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                _, _, due = heapq.heappop(self._heap)
                due.fire()


def _socket_of(resp: requests.Response) -> socket.socket | None:
    """The socket under a streamed response (urllib3 keeps it on the connection)."""
    connection = getattr(resp.raw, "connection", None) or getattr(resp.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        return sock
    fp = getattr(getattr(resp.raw, "_fp", None), "fp", None)
    sock = getattr(getattr(fp, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None
