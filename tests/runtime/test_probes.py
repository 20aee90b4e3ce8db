"""listener.runtime.probes: real HTTP requests against a ProbeServer on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import requests
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from listener.errors import ConfigError
from listener.metrics import Metrics
from listener.web.server import WebServer as ProbeServer

Test = Callable[[ProbeServer], Awaitable[None]]


def run_with_server(test: Test, ready: Callable[[], tuple[bool, str]] | None = None,
                    registry: CollectorRegistry | None = None, **kwargs: Any) -> None:
    """Start a server on a free port, run ``test`` against it, always stop it."""

    async def main() -> None:
        server = ProbeServer(registry or CollectorRegistry(), "127.0.0.1", 0,
                             ready or (lambda: (True, "ready")), **kwargs)
        await server.start()
        try:
            await test(server)
        finally:
            await server.stop()

    asyncio.run(main())


async def get(url: str, method: str = "GET", **kwargs: Any) -> requests.Response:
    """A blocking ``requests`` call in a thread, so the server's loop keeps running."""
    return await asyncio.to_thread(requests.request, method, url, timeout=5, **kwargs)


async def raw(server: ProbeServer, data: bytes) -> bytes:
    """Send raw bytes and read the whole response (the server closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    return reply


def test_metrics_scrape_shows_incremented_counter() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry, "lab")
    m.segments_fetched.inc(3)

    async def test(server: ProbeServer) -> None:
        assert server.port > 0
        r = await get(server.url + "/metrics")
        assert r.status_code == 200
        assert r.headers["Content-Type"] == CONTENT_TYPE_LATEST
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
        fam = families["listener_hls_segments_fetched"]
        assert fam.type == "counter"
        values = {s.name: s.value for s in fam.samples if s.labels == {"station": "lab"}}
        assert values["listener_hls_segments_fetched_total"] == 3
        # A later scrape sees a later increment.
        m.segments_fetched.inc()
        r = await get(server.url + "/metrics?name[]=ignored")
        assert 'listener_hls_segments_fetched_total{station="lab"} 4.0' in r.text

    run_with_server(test, registry=registry)


def test_healthz_ok_and_head_has_no_body() -> None:
    async def test(server: ProbeServer) -> None:
        r = await get(server.url + "/healthz")
        assert (r.status_code, r.text) == (200, "ok\n")
        assert r.headers["Connection"] == "close"
        r = await get(server.url + "/healthz", method="HEAD")
        assert r.status_code == 200
        assert r.headers["Content-Length"] == "3"
        assert r.content == b""

    run_with_server(test)


def test_readyz_follows_the_callable() -> None:
    state = {"ok": False, "why": "model not loaded"}

    async def test(server: ProbeServer) -> None:
        r = await get(server.url + "/readyz")
        assert (r.status_code, r.text) == (503, "model not loaded\n")
        state.update(ok=True, why="ready: scoring live audio")
        r = await get(server.url + "/readyz")
        assert (r.status_code, r.text) == (200, "ready: scoring live audio\n")

    run_with_server(test, ready=lambda: (bool(state["ok"]), str(state["why"])))


def test_stalled_heartbeat_fails_healthz_and_recovers() -> None:
    async def test(server: ProbeServer) -> None:
        # Simulate a loop that could not run the heartbeat for 100 s; the
        # slow interval makes sure the real heartbeat does not tick meanwhile.
        server.heartbeat_interval_s = 60.0
        await asyncio.sleep(0.05)  # let the heartbeat's first tick (1 s sleep) start
        server.last_heartbeat -= 100
        r = await get(server.url + "/healthz")
        assert r.status_code == 503
        assert "heartbeat" in r.text and "stalled" in r.text

    run_with_server(test)

    async def recovers(server: ProbeServer) -> None:
        server.last_heartbeat -= 100
        await asyncio.sleep(0.15)  # several real heartbeat ticks
        assert server.heartbeat_age_s() < 0.5
        r = await get(server.url + "/healthz")
        assert r.status_code == 200

    run_with_server(recovers, heartbeat_max_age_s=0.5, heartbeat_interval_s=0.02)


def test_unknown_path_404_and_other_methods_405() -> None:
    async def test(server: ProbeServer) -> None:
        assert (await get(server.url + "/")).status_code == 404
        assert (await get(server.url + "/metricsx")).status_code == 404
        r = await get(server.url + "/metrics", method="POST", data=b"x" * 5000)
        assert r.status_code == 405
        assert r.headers["Allow"] == "GET, HEAD"
        assert (await get(server.url + "/readyz", method="DELETE")).status_code == 405

    run_with_server(test)


def test_oversize_headers_are_rejected_with_431() -> None:
    async def test(server: ProbeServer) -> None:
        r = await get(server.url + "/metrics", headers={"X-Big": "a" * 20000})
        assert r.status_code == 431
        # The server is still serving afterwards.
        assert (await get(server.url + "/healthz")).status_code == 200

    run_with_server(test, max_header_bytes=8192)


def test_malformed_request_400_and_slow_client_408() -> None:
    async def test(server: ProbeServer) -> None:
        reply = await raw(server, b"HELLO\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400 ")
        # Half a request head, then silence: answered after read_timeout_s.
        reply = await raw(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        assert reply.startswith(b"HTTP/1.1 408 ")

    run_with_server(test, read_timeout_s=0.2)


def test_handler_exception_gives_500_and_server_survives() -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    async def test(server: ProbeServer) -> None:
        r = await get(server.url + "/readyz")
        assert r.status_code == 500
        assert (await get(server.url + "/healthz")).status_code == 200

    run_with_server(test, ready=broken)


def test_stop_releases_the_port() -> None:
    port = 0

    async def test(server: ProbeServer) -> None:
        nonlocal port
        port = server.port
        # A connection left open must not keep stop() from finishing.
        await asyncio.open_connection("127.0.0.1", port)

    run_with_server(test)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_port_in_use_or_unresolvable_host_is_a_clear_config_error() -> None:
    async def main() -> list[str]:
        messages = []
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            for host, p in (("127.0.0.1", port), ("no-such-host.invalid", 0)):
                server = ProbeServer(CollectorRegistry(), host, p, lambda: (True, "ok"))
                with pytest.raises(ConfigError) as info:
                    await server.start()
                messages.append(str(info.value))
        return messages

    in_use, unresolvable = asyncio.run(main())
    assert "metrics.host/metrics.port" in in_use and "in use" in in_use
    assert "no-such-host.invalid" in unresolvable
