"""Every connection to the HTTP server, bounded: a cap, a head guard, write and idle timeouts.

aiohttp parses whatever a client sends and waits for it indefinitely, and
asyncio accepts every connection it is offered: 1,100 idle sockets once held
a daemon at its 1,024 descriptors, and its own stream fetches failed. So an
asyncio protocol (:class:`Guard`) sits in front of aiohttp's for the whole
life of each connection, and :class:`Connections` keeps the table:

* at most ``max_connections_per_client`` from one non-loopback address (one
  scanner or slow-loris client cannot take every slot; loopback peers share
  one address, local probes included, so they are not counted apart): the
  next one is answered ``503`` and closed;
* at most ``max_connections`` at once. A new connection over the cap first
  evicts the oldest one still waiting for its request head (idle sockets are
  the cheapest to drop, and a real client, such as a probe, sends its head
  at once); when every connection is busy it is answered ``503`` and closed;
* a head not complete within ``read_timeout_s`` is answered ``408``, one
  over ``max_header_bytes`` ``431``, a request line that is not
  ``METHOD TARGET HTTP/x`` ``400`` (since every response closes its
  connection, there is only one head per connection);
* a good head is handed to aiohttp's protocol, and :meth:`Connections.sweep`
  (about once a second) aborts a connection whose output has not moved for
  ``write_timeout_s`` (a client that stopped reading: the kernel's count of
  bytes the peer acknowledged, ``TCP_INFO``, stands still while data waits)
  or on which nothing moved either way for ``idle_timeout_s``.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import logging
import socket
import struct
import termios
import time
from collections import Counter
from collections.abc import Callable

from aiohttp import web

from listener.config import HttpLimitsConfig as Limits
from listener.web.httplog import Throttled

logger = logging.getLogger(__name__)

_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}
# Why the server dropped a connection: the metric's reason label, and the log's words.
_DROPS = {"cap": "refused over the connection cap",
          "client_cap": "refused over the per-client connection cap",
          "evicted": "idle connections evicted at the cap",
          "head_timeout": "request heads not complete in time",
          "head_too_large": "request heads too large",
          "bad_request_line": "malformed request lines",
          "write_timeout": "write timeouts (a client stopped reading)",
          "idle_timeout": "idle timeouts"}
_REPLY_DROPS = {408: "head_timeout", 431: "head_too_large", 400: "bad_request_line"}
_BODIES = {400: b"bad request\n", 408: b"request timeout\n", 431: b"request headers too large\n",
           503: b"too many connections; try again later\n"}
#: Sent on every response (aiohttp's through the server's prepare hook, ours here).
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # No inline script anywhere; inline style attributes are still used by the pages.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; object-src 'none'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
}
#: The server's limits, for handlers that time their own reads and writes.
LIMITS_KEY = web.AppKey("limits", Limits)
_TCP_INFO_ACKED = 120  # offset of tcpi_bytes_acked (Linux 4.1+) in struct tcp_info
_TCP_INFO_RECEIVED = 128  # tcpi_bytes_received (Linux 4.1+)


class Connections:
    """The server's open connections (see the module doc).

    ``make_protocol`` builds aiohttp's protocol for a connection whose head passed.
    ``report`` collects refusals and timeouts into a rate-limited log line;
    ``dropped`` counts every connection the server dropped, by reason (the
    ``listener_web_connections_dropped_total`` metric).
    """

    def __init__(self, make_protocol: Callable[[], asyncio.Protocol], limits: Limits,
                 report: Throttled) -> None:
        self.make_protocol = make_protocol
        self.limits = limits
        self.report = report
        #: Every open connection, oldest first; and those still reading a head.
        self.open: dict[Guard, None] = {}
        self.heads: dict[Guard, None] = {}
        self.dropped: Counter[str] = Counter()
        #: The address each admitted non-loopback connection came from, and counts.
        self.clients: dict[Guard, str] = {}
        self.per_client: Counter[str] = Counter()

    def factory(self) -> Guard:
        """A protocol for a new connection (``loop.create_server``'s factory)."""
        return Guard(self)

    def admit(self, guard: Guard, client: str) -> bool:
        """Count a new connection from ``client`` in; ``False`` when it must be refused.

        The per-client cap is checked first, so a client at its cap cannot
        evict other clients' idle connections.
        """
        counted = bool(client) and not _is_loopback(client)
        if counted and self.per_client[client] >= self.limits.max_connections_per_client:
            self._count("client_cap")
            return False
        if len(self.open) >= self.limits.max_connections:
            oldest = next(iter(self.heads), None)
            if oldest is None:
                self._count("cap")
                return False
            self._count("evicted")
            oldest.abort()
        self.open[guard] = None
        self.heads[guard] = None
        if counted:
            self.clients[guard] = client
            self.per_client[client] += 1
        return True

    def forget(self, guard: Guard) -> None:
        self.open.pop(guard, None)
        self.heads.pop(guard, None)
        client = self.clients.pop(guard, None)
        if client is not None:
            self.per_client[client] -= 1
            if self.per_client[client] <= 0:
                del self.per_client[client]

    def sweep(self, now: float | None = None) -> None:
        """Abort connections whose output stalled or that went idle (call about once a second)."""
        now = time.monotonic() if now is None else now
        for guard in list(self.open):
            reason = guard.check(now)
            if reason is not None:
                self._count(reason)
                guard.abort()

    def close_all(self) -> None:
        for guard in list(self.open):
            guard.abort()

    def _count(self, reason: str, log: bool = True) -> None:
        self.dropped[reason] += 1
        if log:
            self.report.note(_DROPS[reason], "")


class Guard(asyncio.Protocol):
    """One connection: buffers and checks its head, then forwards to aiohttp's protocol."""

    def __init__(self, table: Connections) -> None:
        self._table = table
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._inner: asyncio.Protocol | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._moved = time.monotonic()  # last time bytes moved either way
        self._stalled_since: float | None = None
        self._counters: tuple[int, int, int] | None = None

    # -- the head -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self._table.admit(self, client):
            self._reply(503, linger=False)
            return
        self._timer = asyncio.get_running_loop().call_later(
            self._table.limits.read_timeout_s, self._reply, 408, False)

    def data_received(self, data: bytes) -> None:
        self._moved = time.monotonic()
        if self._inner is not None:
            self._inner.data_received(data)
            return
        if self._transport is None:
            return  # already answered; discard what the client still sends
        self._buf += data
        limit = self._table.limits.max_header_bytes
        end = self._buf.find(b"\r\n\r\n")
        if (end < 0 and len(self._buf) > limit) or end + 4 > limit:
            self._reply(431, linger=True)
            return
        if end < 0:
            return
        parts = bytes(self._buf[:self._buf.find(b"\r\n")]).split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            self._reply(400, linger=True)
            return
        self._hand_over()

    def _hand_over(self) -> None:
        transport = self._transport
        assert transport is not None
        self._end_head()
        self._inner = self._table.make_protocol()
        self._inner.connection_made(transport)
        data, self._buf = bytes(self._buf), bytearray()
        self._inner.data_received(data)

    def _reply(self, status: int, linger: bool) -> None:
        transport, self._transport = self._transport, None
        if transport is None or self._inner is not None:
            return
        self._end_head()
        if status in _REPLY_DROPS:  # (logged as bad requests, with aiohttp's own)
            self._table._count(_REPLY_DROPS[status], log=False)
        body = _BODIES[status]
        extra = "".join(f"{k}: {v}\r\n" for k, v in SECURITY_HEADERS.items())
        head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n{extra}"
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

    def _end_head(self) -> None:
        self._table.heads.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- after the hand-over: forward, and watch the output ------------------

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        return None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._end_head()
        self._table.forget(self)
        if self._inner is not None:
            inner, self._inner = self._inner, None
            inner.connection_lost(exc)

    def check(self, now: float) -> str | None:
        """Why this connection should be dropped now, if it should."""
        transport = self._transport
        if self._inner is None or transport is None or transport.is_closing():
            return None
        limits = self._table.limits
        buffered = transport.get_write_buffer_size()
        sock = transport.get_extra_info("socket")
        acked, received, unsent = _tcp_counters(sock)
        before, self._counters = self._counters, (acked, received, buffered)
        wrote = before is None or acked > before[0] or buffered < before[2]
        if wrote or (before is not None and received > before[1]):
            self._moved = now
        if buffered + unsent == 0 or wrote:
            self._stalled_since = None
        elif self._stalled_since is None:
            self._stalled_since = now
        if self._stalled_since is not None and now - self._stalled_since >= \
                limits.write_timeout_s:
            return "write_timeout"
        if now - self._moved >= limits.idle_timeout_s:
            return "idle_timeout"
        return None

    def abort(self) -> None:
        """Drop the connection now (evicted, stalled, or the server stopping)."""
        transport = self._transport
        self._end_head()
        self._table.forget(self)
        if transport is not None:
            transport.abort()


def _is_loopback(address: str) -> bool:
    """127.0.0.0/8, ``::1``, and IPv4 loopback seen through a dual-stack socket."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _tcp_counters(sock: socket.socket | None) -> tuple[int, int, int]:
    """Bytes the peer acknowledged, bytes received, bytes still in the send queue.

    Linux only (``TCP_INFO``, ``SIOCOUTQ``); zeros elsewhere, where the write
    timeout then watches only what aiohttp has buffered in the transport.
    """
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return 0, 0, 0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 192)
        unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    except OSError:
        return 0, 0, 0
    if len(info) < _TCP_INFO_RECEIVED + 8:
        return 0, 0, unsent
    acked, received = struct.unpack_from("QQ", info, _TCP_INFO_ACKED)
    return acked, received, unsent
