"""A whole-body deadline for streamed HTTP responses (``FetchConfig.max_fetch_s``).

The read timeout bounds each wait for data; a server trickling a byte now
and then passes it for ever. :class:`Deadline` ends such a download at the
deadline itself, from a timer thread, and :func:`body_chunks` reads what
has arrived so the bytes counted are the bytes received.
"""

from __future__ import annotations

import socket
import threading
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
    """Shuts a response's socket down when ``after_s`` elapses (``expired`` then).

    ``shutdown`` wakes a ``recv`` blocked in another thread, where ``close``
    would not; the attempt then fails as "too slow" and is retried.
    """

    def __init__(self, resp: requests.Response, after_s: float) -> None:
        self._resp = resp
        self.expired = False
        self._timer = threading.Timer(max(0.0, after_s), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
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
        self._timer.cancel()


def _socket_of(resp: requests.Response) -> socket.socket | None:
    """The socket under a streamed response (urllib3 keeps it on the connection)."""
    connection = getattr(resp.raw, "connection", None) or getattr(resp.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        return sock
    fp = getattr(getattr(resp.raw, "_fp", None), "fp", None)
    sock = getattr(getattr(fp, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None
