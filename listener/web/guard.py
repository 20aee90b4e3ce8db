"""A request-head guard in front of aiohttp: bounded, timed, well-formed heads only.

aiohttp parses whatever a client sends and waits for it indefinitely: a
client that opens a connection and trickles a request head holds it open
(slowloris), an oversize header gets a ``400`` from the parser. This asyncio
protocol sits in front of aiohttp's own protocol for the first (and, since
every response closes the connection, only) request head on a connection:

* a head not complete within ``read_timeout_s`` is answered ``408``;
* a head larger than ``max_header_bytes`` is answered ``431``;
* a request line that is not ``METHOD TARGET HTTP/x`` is answered ``400``;

and a good head is handed, with the transport, to aiohttp's protocol, which
then sees an ordinary new connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}
_BODIES = {400: b"bad request\n", 408: b"request timeout\n", 431: b"request headers too large\n"}


class HeadGuard(asyncio.Protocol):
    """Buffers one request head, checks it, then hands over to ``make_protocol()``.

    ``live`` is the owner's set of guards still reading a head (closed on stop).
    """

    def __init__(self, make_protocol: Callable[[], asyncio.Protocol], live: set[HeadGuard],
                 *, read_timeout_s: float, max_header_bytes: int) -> None:
        self._make = make_protocol
        self._live = live
        self._timeout_s = read_timeout_s
        self._max = max_header_bytes
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._live.add(self)
        self._timer = asyncio.get_running_loop().call_later(
            self._timeout_s, self._reject, 408, False)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return  # already answered; discard what the client still sends
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > self._max:
                self._reject(431, True)
            return
        if end + 4 > self._max:
            self._reject(431, True)
            return
        parts = bytes(self._buf[:self._buf.find(b"\r\n")]).split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            self._reject(400, True)
            return
        self._hand_over()

    def _hand_over(self) -> None:
        transport, self._transport = self._transport, None
        assert transport is not None
        self._done()
        protocol = self._make()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(bytes(self._buf))
        self._buf.clear()

    def _reject(self, status: int, linger: bool) -> None:
        transport, self._transport = self._transport, None
        if transport is None:
            return
        self._done()
        body = _BODIES[status]
        head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                "Connection: close\r\n\r\n")
        transport.write(head.encode("latin-1") + body)
        if linger and transport.can_write_eof():
            # Half-close and keep reading (and discarding) briefly: closing with
            # unread input makes the kernel send a reset that can destroy the
            # answer before the client reads it (Apache and nginx linger too).
            transport.write_eof()
            asyncio.get_running_loop().call_later(1.0, transport.close)
        else:
            transport.close()

    def _done(self) -> None:
        self._live.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._done()

    def close(self) -> None:
        """Drop the connection (server stopping)."""
        transport, self._transport = self._transport, None
        self._done()
        if transport is not None:
            transport.close()
