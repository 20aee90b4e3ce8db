"""The daemon's HTTP server (aiohttp): probes and metrics, and the console when given one.

Routes always served (GET and HEAD):

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

With a :class:`~listener.web.console.Console` the pages and the
``/api/*`` routes of ``docs/console.md`` are added; without one (``metrics``
only) every other path is 404.

Every response closes its connection, so each request head passes the
:class:`~listener.web.guard.HeadGuard` (timeouts and size limits that
aiohttp does not enforce on a head). The console is a handful of requests per
page for a few operators; keep-alive would buy nothing measurable there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from listener.errors import ConfigError
from listener.web.guard import HeadGuard

logger = logging.getLogger(__name__)

ReadyCheck = Callable[[], tuple[bool, str | Mapping[str, Any]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RouteProvider(Protocol):
    """Something that adds its routes to the app (the console)."""

    def add_routes(self, app: web.Application) -> None: ...


def _text(status: int, body: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/plain", headers=headers)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Plain-text bodies for 404/405/500, and a handler failure never kills the server."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as err:
        return _text(405, "method not allowed\n", Allow=", ".join(sorted(err.allowed_methods)))
    except web.HTTPNotFound as err:
        # The router's own 404 says "404: Not Found"; a handler's names what is missing.
        text = err.text if err.text and not err.text.startswith("404:") else "not found\n"
        return _text(404, text)
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("web: handler for %s %s failed", request.method, request.path)
        return _text(500, "internal error\n")


async def _close_and_no_store(request: web.Request, response: web.StreamResponse) -> None:
    # Too late for force_close() to write the header itself, so both.
    response.force_close()
    response.headers["Connection"] = "close"
    response.headers.setdefault("Cache-Control", "no-store")


class WebServer:
    """Serves the probe and metrics routes (and the console) for one station.

    Args:
        registry: the registry whose metrics ``/metrics`` exposes.
        host: address to bind (``127.0.0.1`` by default in config).
        port: TCP port; 0 picks a free one, read it back from :attr:`port`.
        ready: returns ``(is_ready, reason)``; called on each ``/readyz``.
        heartbeat_max_age_s: ``/healthz`` fails once the heartbeat is older.
        heartbeat_interval_s: how often the heartbeat task ticks.
        read_timeout_s: time a client gets to send its request head.
        max_header_bytes: larger request heads are answered with 431.
        console: adds the console's pages and API; ``None`` serves probes only.
    """

    def __init__(self, registry: CollectorRegistry, host: str, port: int,
                 ready: ReadyCheck, heartbeat_max_age_s: float = 10.0, *,
                 heartbeat_interval_s: float = 1.0, read_timeout_s: float = 5.0,
                 max_header_bytes: int = 8192, console: RouteProvider | None = None) -> None:
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
        self.console = console
        #: ``time.monotonic()`` of the last heartbeat tick (tests may set it back).
        self.last_heartbeat = time.monotonic()
        self._server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._guards: set[HeadGuard] = set()

    @property
    def url(self) -> str:
        """Base URL of the bound server, e.g. ``http://127.0.0.1:9108``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def build_app(self) -> web.Application:
        """The aiohttp application: probes, metrics and the console's routes."""
        app = web.Application(middlewares=[_errors])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self.console is not None:
            self.console.add_routes(app)
        app.on_response_prepare.append(_close_and_no_store)
        return app

    async def start(self) -> None:
        """Bind, start serving and start the heartbeat. Idempotent."""
        if self._server is not None:
            return
        self.last_heartbeat = time.monotonic()
        runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=1.0,
                               max_line_size=self.max_header_bytes,
                               max_field_size=self.max_header_bytes)
        await runner.setup()
        make = runner.server
        assert make is not None
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: HeadGuard(make, self._guards, read_timeout_s=self.read_timeout_s,
                                  max_header_bytes=self.max_header_bytes),
                self.host, self.port)
        except OSError as err:  # port in use, host unresolvable or not ours
            await runner.cleanup()
            raise ConfigError(f"cannot serve metrics on {self.host}:{self.port}: "
                              f"{err.strerror or err}", key="metrics.host/metrics.port"
                              ) from err
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._heartbeat = asyncio.create_task(self._beat(), name="web-heartbeat")
        logger.info("serving %s on %s", "the console, /metrics, /healthz, /readyz"
                    if self.console is not None else "/metrics, /healthz, /readyz", self.url)

    async def stop(self) -> None:
        """Stop listening, drop open connections and the heartbeat. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for guard in list(self._guards):
            guard.close()
        if self._heartbeat is not None:
            self._heartbeat.cancel("web server stopping")
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        if self._runner is not None:
            # Closes aiohttp's connections (an open event stream included).
            await self._runner.cleanup()
            self._runner = None
        await server.wait_closed()
        logger.info("web server on %s stopped", self.url)

    def heartbeat_age_s(self) -> float:
        """Seconds since the heartbeat task last ran."""
        return time.monotonic() - self.last_heartbeat

    async def _beat(self) -> None:
        while True:
            self.last_heartbeat = time.monotonic()
            await asyncio.sleep(self.heartbeat_interval_s)

    async def _metrics(self, request: web.Request) -> web.Response:
        # A few dozen series: rendering takes well under a millisecond, so
        # doing it on the loop is cheaper than a thread hop.
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        age = self.heartbeat_age_s()
        if self._heartbeat is None or self._heartbeat.done():
            return _text(503, "heartbeat task not running\n")
        if age > self.heartbeat_max_age_s:
            return _text(503, f"event loop stalled: heartbeat {age:.1f}s old "
                              f"(limit {self.heartbeat_max_age_s:g}s)\n")
        return _text(200, "ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, reason = self.ready()
        if isinstance(reason, Mapping):
            body = json.dumps(reason, indent=1, sort_keys=True) + "\n"
            # Exactly "application/json" (JSON is UTF-8 by definition; no charset).
            return web.Response(status=200 if ok else 503, body=body.encode(),
                                headers={"Content-Type": "application/json"})
        return _text(200 if ok else 503, f"{reason}\n")
