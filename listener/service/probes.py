"""/metrics, /healthz and /readyz over a minimal HTTP/1.1 server on asyncio streams.

No web framework: three read-only routes do not justify a dependency, and
serving them from the daemon's own event loop is what makes ``/healthz``
meaningful. Routes (GET and HEAD):

``/metrics``
    ``prometheus_client.generate_latest(registry)`` in the text format.
``/healthz``
    Liveness. 200 ``ok`` while a heartbeat task on the loop keeps ticking;
    503 once the heartbeat is older than ``heartbeat_max_age_s``. A loop that
    is blocked outright cannot answer at all (the probe times out), but a
    *starved* loop (callbacks queued behind long CPU work) still answers
    eventually, and this tells the supervisor it is unhealthy.
``/readyz``
    Readiness. 200 or 503 with the reason returned by the ``ready`` callable:
    a line of text, or a JSON document (a fleet's per-station report).

Every response closes the connection: probes and scrapers open one connection
per request anyway, and this keeps the server free of keep-alive state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from listener.errors import ConfigError

logger = logging.getLogger(__name__)

ReadyCheck = Callable[[], tuple[bool, str | Mapping[str, Any]]]

_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"
_ROUTES = ("/metrics", "/healthz", "/readyz")
_METHODS = ("GET", "HEAD")


class ProbeServer:
    """Serves the probe and metrics routes for one station.

    Args:
        registry: the registry whose metrics ``/metrics`` exposes.
        host: address to bind (``127.0.0.1`` by default in config).
        port: TCP port; 0 picks a free one, read it back from :attr:`port`.
        ready: returns ``(is_ready, reason)``; called on each ``/readyz``.
        heartbeat_max_age_s: ``/healthz`` fails once the heartbeat is older.
        heartbeat_interval_s: how often the heartbeat task ticks.
        read_timeout_s: time a client gets to send its request headers.
        max_header_bytes: larger request heads are answered with 431.
    """

    def __init__(self, registry: CollectorRegistry, host: str, port: int,
                 ready: ReadyCheck, heartbeat_max_age_s: float = 10.0, *,
                 heartbeat_interval_s: float = 1.0, read_timeout_s: float = 5.0,
                 max_header_bytes: int = 8192) -> None:
        if heartbeat_max_age_s <= 0 or heartbeat_interval_s <= 0:
            raise ValueError(f"heartbeat times must be positive, got max_age="
                             f"{heartbeat_max_age_s!r} interval={heartbeat_interval_s!r}")
        self.registry = registry
        self.host = host
        self.port = port
        self.ready = ready
        self.heartbeat_max_age_s = heartbeat_max_age_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.read_timeout_s = read_timeout_s
        self.max_header_bytes = max_header_bytes
        #: ``time.monotonic()`` of the last heartbeat tick (tests may set it back).
        self.last_heartbeat = time.monotonic()
        self._server: asyncio.Server | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """Base URL of the bound server, e.g. ``http://127.0.0.1:9108``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind, start serving and start the heartbeat. Idempotent."""
        if self._server is not None:
            return
        self.last_heartbeat = time.monotonic()
        # The stream limit bounds how much of a request head we ever buffer.
        try:
            self._server = await asyncio.start_server(
                self._on_connection, self.host, self.port, limit=self.max_header_bytes)
        except OSError as err:  # port in use, host unresolvable or not ours
            raise ConfigError(f"cannot serve metrics on {self.host}:{self.port}: "
                              f"{err.strerror or err}", key="metrics.host/metrics.port"
                              ) from err
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._heartbeat = asyncio.create_task(self._beat(), name="probe-heartbeat")
        logger.info("serving /metrics, /healthz, /readyz on %s", self.url)

    async def stop(self) -> None:
        """Stop listening, cancel open connections and the heartbeat. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = [*self._connections]
        if self._heartbeat is not None:
            tasks.append(self._heartbeat)
            self._heartbeat = None
        for task in tasks:
            task.cancel("probe server stopping")
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        logger.info("probe server on %s stopped", self.url)

    def heartbeat_age_s(self) -> float:
        """Seconds since the heartbeat task last ran."""
        return time.monotonic() - self.last_heartbeat

    async def _beat(self) -> None:
        while True:
            self.last_heartbeat = time.monotonic()
            await asyncio.sleep(self.heartbeat_interval_s)

    # --- connection handling ---------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await self._serve_one(reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # the client went away or stopped reading; nothing to answer
        except Exception:
            # Never let one request take the server down.
            logger.exception("probe server: unexpected error on a connection")
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), self.read_timeout_s)

    async def _serve_one(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.read_timeout_s)
        except asyncio.LimitOverrunError:
            await self._send(writer, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, _TEXT,
                             b"request headers too large\n")
            await self._linger(reader, writer)
            return
        except asyncio.IncompleteReadError:
            return  # closed before a full request head: no one to answer
        except TimeoutError:
            await self._send(writer, HTTPStatus.REQUEST_TIMEOUT, _TEXT, b"request timeout\n")
            return

        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            await self._send(writer, HTTPStatus.BAD_REQUEST, _TEXT, b"bad request\n")
            await self._linger(reader, writer)
            return
        method, target, _version = parts
        path = target.split("?", 1)[0]
        try:
            status, ctype, body, extra = self._route(method, path)
        except Exception:
            logger.exception("probe server: handler for %s %s failed", method, path)
            status, ctype, body, extra = (HTTPStatus.INTERNAL_SERVER_ERROR, _TEXT,
                                          b"internal error\n", {})
        await self._send(writer, status, ctype, body, head_only=method == "HEAD", extra=extra)
        if method not in _METHODS:
            await self._linger(reader, writer)  # it may have sent a body we never read

    def _route(self, method: str, path: str
               ) -> tuple[HTTPStatus, str, bytes, dict[str, str]]:
        if path not in _ROUTES:
            return HTTPStatus.NOT_FOUND, _TEXT, b"not found\n", {}
        if method not in _METHODS:
            return (HTTPStatus.METHOD_NOT_ALLOWED, _TEXT, b"method not allowed\n",
                    {"Allow": ", ".join(_METHODS)})
        if path == "/metrics":
            # A few dozen series: rendering takes well under a millisecond,
            # so doing it on the loop is cheaper than a thread hop.
            return HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(self.registry), {}
        if path == "/healthz":
            return self._healthz()
        ok, reason = self.ready()
        status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
        if isinstance(reason, Mapping):
            body = json.dumps(reason, indent=1, sort_keys=True) + "\n"
            return status, _JSON, body.encode(), {}
        return status, _TEXT, f"{reason}\n".encode(), {}

    def _healthz(self) -> tuple[HTTPStatus, str, bytes, dict[str, str]]:
        age = self.heartbeat_age_s()
        if self._heartbeat is None or self._heartbeat.done():
            return HTTPStatus.SERVICE_UNAVAILABLE, _TEXT, b"heartbeat task not running\n", {}
        if age > self.heartbeat_max_age_s:
            text = (f"event loop stalled: heartbeat {age:.1f}s old "
                    f"(limit {self.heartbeat_max_age_s:g}s)\n")
            return HTTPStatus.SERVICE_UNAVAILABLE, _TEXT, text.encode(), {}
        return HTTPStatus.OK, _TEXT, b"ok\n", {}

    async def _send(self, writer: asyncio.StreamWriter, status: HTTPStatus, ctype: str,
                    body: bytes, *, head_only: bool = False,
                    extra: dict[str, str] | None = None) -> None:
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{k}: {v}" for k, v in (extra or {}).items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        await asyncio.wait_for(writer.drain(), self.read_timeout_s)

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      max_bytes: int = 1 << 20, timeout_s: float = 1.0) -> None:
        """Half-close, then discard what the client still sends, briefly.

        Closing a socket with unread input makes the kernel send a reset,
        which can destroy our error response before the client reads it; a
        short lingering close lets it arrive (as Apache and nginx do).
        """
        if writer.can_write_eof():
            writer.write_eof()
        deadline = time.monotonic() + timeout_s
        seen = 0
        while seen < max_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                chunk = await asyncio.wait_for(reader.read(65536), left)
            except (TimeoutError, ConnectionError):
                return
            if not chunk:
                return
            seen += len(chunk)
