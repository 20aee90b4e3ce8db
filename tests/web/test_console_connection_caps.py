"""The console's connection caps: drops counted by reason, per-client limits, floods (issue 21)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest
import requests
from support.console_harness import call, raw, run_console

from listener.config import HttpLimitsConfig
from listener.web.guard import Connections
from listener.web.httplog import Throttled
from listener.web.server import WebServer
from listener.web.views import StationView


def _web_metrics(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families
    text = requests.get(url + "/metrics", timeout=5).text
    return {(s.name + (f"[{s.labels['reason']}]" if "reason" in s.labels else "")): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name.startswith("listener_web_")}


def test_dropped_connections_are_counted_by_reason_in_a_scrape(tmp_path: Path) -> None:
    async def test(server: WebServer, view: StationView) -> None:
        before = await asyncio.to_thread(_web_metrics, server.url)
        assert before["listener_web_connections_dropped_total[cap]"] == 0  # at zero from start
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(9)]
        try:  # 8 heads pending at the cap of 8: the ninth evicts the oldest
            await asyncio.sleep(0.2)
            busy = (await asyncio.to_thread(_web_metrics, server.url))
            await asyncio.sleep(0.6)  # the rest time out waiting for their heads
        finally:
            for s in idle:
                s.close()
        out = await asyncio.to_thread(raw, server.port, b"HELLO\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400 ")
        after = await asyncio.to_thread(_web_metrics, server.url)
        assert busy["listener_web_connections_open"] >= 8
        assert after["listener_web_connections_dropped_total[evicted]"] >= 2  # 9 idle + scrape
        assert after["listener_web_connections_dropped_total[head_timeout]"] >= 5
        assert after["listener_web_connections_dropped_total[bad_request_line]"] == 1
        assert after["listener_web_connections_dropped_total[cap]"] == 0

    run_console(tmp_path, test, limits=HttpLimitsConfig(read_timeout_s=0.3, max_connections=8))


def _own_address() -> str | None:
    """This host's non-loopback IPv4 address (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("203.0.113.1", 9))  # TEST-NET-3: only picks the outgoing interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_one_client_cannot_take_every_slot_but_loopback_is_not_counted_apart() -> None:
    table = Connections(lambda: asyncio.Protocol(), HttpLimitsConfig(
        max_connections=16, max_connections_per_client=3), Throttled(logging.getLogger("t"), "x"))
    guards = [table.factory() for _ in range(5)]
    assert [table.admit(g, "192.0.2.7") for g in guards[:4]] == [True, True, True, False]
    assert table.admit(guards[4], "198.51.100.1")  # another client still gets in
    # Loopback peers share one address, IPv4 loopback through a dual-stack socket included.
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):  # 4 each, over the cap of 3
        assert all(table.admit(table.factory(), address) for _ in range(4)), address
    assert table.dropped["client_cap"] == 1 and table.dropped["evicted"] == 0
    table.forget(guards[0])
    assert table.admit(table.factory(), "192.0.2.7")  # a slot of its own came free
    assert table.per_client == {"192.0.2.7": 3, "198.51.100.1": 1}


def test_every_reason_the_server_drops_for_is_exported() -> None:
    from listener.metrics import CONNECTION_DROP_REASONS
    from listener.web.guard import _DROPS

    assert set(_DROPS) == set(CONNECTION_DROP_REASONS)


def test_a_flood_from_one_address_leaves_room_for_others(tmp_path: Path) -> None:
    address = _own_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address to connect from")

    async def test(server: WebServer, view: StationView) -> None:
        flood = [socket.create_connection((address, server.port)) for _ in range(6)]
        try:
            await asyncio.sleep(0.2)
            refused = await asyncio.to_thread(raw, server.port, b"", address)
            probe = await call("GET", f"http://127.0.0.1:{server.port}/healthz")
            metrics = await asyncio.to_thread(_web_metrics, server.url)
        finally:
            for s in flood:
                s.close()
        assert refused.startswith(b"HTTP/1.1 503 ") and b"too many connections" in refused
        assert probe.status_code == 200  # a local probe is not the flood's client
        assert metrics["listener_web_connections_dropped_total[client_cap]"] >= 1
        assert metrics["listener_web_connections_dropped_total[evicted]"] == 0

    run_console(tmp_path, test, host="0.0.0.0",
                limits=HttpLimitsConfig(max_connections=16, max_connections_per_client=4))
