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

Every response closes its connection, and every connection is held by a
:class:`~listener.web.guard.Guard`: a cap on open connections, a
timed and bounded request head, write and idle timeouts (``metrics.limits``).
The console is a handful of requests per page for a few operators;
keep-alive would buy nothing measurable there.

On a loopback bind every route answers only to a loopback ``Host`` (so a
DNS-rebinding page cannot read it); every response carries
``X-Frame-Options: DENY`` and a ``Content-Security-Policy`` without inline
script and with ``frame-ancestors 'none'``. Malformed requests are answered
``400`` by aiohttp and logged at most once per ``log_interval_s`` with a count.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from listener.config import HttpLimitsConfig
from listener.errors import ConfigError
from listener.web.connmetrics import ConnectionMetrics
from listener.web.guard import LIMITS_KEY, SECURITY_HEADERS, Connections
from listener.web.httplog import AiohttpLog, Throttled
from listener.web.security import host_name, is_loopback

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


def _loopback_hosts_only(request: web.Request) -> web.Response | None:
    """``403`` unless the ``Host`` header names a loopback address (DNS rebinding)."""
    host = request.headers.get("Host", "")
    if is_loopback(host_name(host)):
        return None
    shown = json.dumps(host[:100]) if host else "missing"
    return _text(403, f"Host {shown} is not a loopback name; this console answers to "
                      "127.0.0.1, [::1] and localhost only\n")


async def _close_and_no_store(request: web.Request, response: web.StreamResponse) -> None:
    # Too late for force_close() to write the header itself, so both.
    response.force_close()
    response.headers["Connection"] = "close"
    response.headers.setdefault("Cache-Control", "no-store")
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value


class WebServer:
    """Serves the probe and metrics routes (and the console) for one station.

    Args:
        registry: the registry whose metrics ``/metrics`` exposes.
        host: address to bind (``127.0.0.1`` by default in config).
        port: TCP port; 0 picks a free one, read it back from :attr:`port`.
        ready: returns ``(is_ready, reason)``; called on each ``/readyz``.
        heartbeat_max_age_s: ``/healthz`` fails once the heartbeat is older.
        heartbeat_interval_s: how often the heartbeat task ticks.
        limits: connection limits and timeouts (``metrics.limits``);
            ``read_timeout_s`` and ``max_header_bytes`` override two of them.
        console: adds the console's pages and API; ``None`` serves probes only.
    """

    def __init__(self, registry: CollectorRegistry, host: str, port: int,
                 ready: ReadyCheck, heartbeat_max_age_s: float = 10.0, *,
                 heartbeat_interval_s: float = 1.0, limits: HttpLimitsConfig | None = None,
                 read_timeout_s: float | None = None, max_header_bytes: int | None = None,
                 console: RouteProvider | None = None) -> None:
        if heartbeat_max_age_s <= 0 or heartbeat_interval_s <= 0:
            raise ValueError(f"heartbeat times must be positive, got max_age="
                             f"{heartbeat_max_age_s!r} interval={heartbeat_interval_s!r}")
        limits = limits or HttpLimitsConfig()
        over = {k: v for k, v in (("read_timeout_s", read_timeout_s),
                                  ("max_header_bytes", max_header_bytes)) if v is not None}
        self.limits = limits.model_copy(update=over) if over else limits
        self.registry = registry
        self.host = host
        self.port = port
        self.ready = ready
        self.heartbeat_max_age_s = heartbeat_max_age_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.console = console
        self.loopback = is_loopback(host)
        #: ``time.monotonic()`` of the last heartbeat tick (tests may set it back).
        self.last_heartbeat = time.monotonic()
        self._server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._conns: Connections | None = None
        self._conn_metrics: ConnectionMetrics | None = None
        #: Malformed requests and dropped connections, one log line per interval.
        self.report = Throttled(logger, "HTTP clients refused",
                                interval_s=self.limits.log_interval_s)

    @property
    def url(self) -> str:
        """Base URL of the bound server, e.g. ``http://127.0.0.1:9108``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def build_app(self) -> web.Application:
        """The aiohttp application: probes, metrics and the console's routes."""
        app = web.Application(middlewares=[_errors, self._host_check],
                              client_max_size=64 * 1024)
        app[LIMITS_KEY] = self.limits
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
                               max_line_size=self.limits.max_header_bytes,
                               max_field_size=self.limits.max_header_bytes,
                               logger=AiohttpLog(self.report))
        await runner.setup()
        make = runner.server
        assert make is not None
        self._conns = Connections(make, self._bounded_limits(), self.report)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(self._conns.factory, self.host, self.port)
        except OSError as err:  # port in use, host unresolvable or not ours
            await runner.cleanup()
            raise ConfigError(f"cannot serve metrics on {self.host}:{self.port}: "
                              f"{err.strerror or err}", key="metrics.host/metrics.port"
                              ) from err
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._conn_metrics = ConnectionMetrics(self._conns)
        self.registry.register(self._conn_metrics)
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._heartbeat = asyncio.create_task(self._beat(), name="web-heartbeat")
        self._watchdog = asyncio.create_task(self._watch(self._conns), name="web-watchdog")
        logger.info("serving %s on %s", "the console, /metrics, /healthz, /readyz"
                    if self.console is not None else "/metrics, /healthz, /readyz", self.url)

    async def stop(self) -> None:
        """Stop listening, drop open connections and the heartbeat. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in (self._heartbeat, self._watchdog):
            if task is not None:
                task.cancel("web server stopping")
                await asyncio.gather(task, return_exceptions=True)
        self._heartbeat = self._watchdog = None
        if self._conns is not None:
            # Heads still being read, and (below) aiohttp's own connections.
            self._conns.close_all()
        if self._conn_metrics is not None:
            self.registry.unregister(self._conn_metrics)
            self._conn_metrics = None
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

    async def _watch(self, conns: Connections) -> None:
        every = min(1.0, self.limits.write_timeout_s / 4, self.limits.idle_timeout_s / 4)
        while True:
            await asyncio.sleep(every)
            conns.sweep()
            self.report.flush()

    def _bounded_limits(self) -> HttpLimitsConfig:
        """The limits, with the connection cap under a quarter of the descriptor limit."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        cap = self.limits.max_connections
        if soft != resource.RLIM_INFINITY and cap > soft // 4:
            cap = max(8, soft // 4)
            logger.warning("metrics.limits.max_connections %d lowered to %d: the process may "
                           "open %d files (raise LimitNOFILE in the systemd unit, or ulimit "
                           "-n)", self.limits.max_connections, cap, soft)
        return self.limits.model_copy(update={"max_connections": cap})

    @web.middleware
    async def _host_check(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.loopback:
            refused = _loopback_hosts_only(request)
            if refused is not None:
                return refused
        return await handler(request)

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
