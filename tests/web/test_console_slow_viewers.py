"""Live viewers that never read are dropped; viewers share one backfill (issue 21)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests
from support.console_harness import call, run_console

from listener.config import HttpLimitsConfig
from listener.web.console import Console
from listener.web.server import WebServer
from listener.web.views import StationView


def fill_history(view: StationView, seconds: float = 70.0, rate: int = 48000) -> None:
    history = view.live.history
    assert history is not None
    rng = np.random.default_rng(1)
    for k in range(int(seconds)):
        history.append(float(k), (rng.standard_normal(rate) * 0.01).astype(np.float32), rate)


def non_reading_viewer(port: int) -> socket.socket:
    """A live viewer that never reads (its receive buffer made small, so it is full at once)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET /api/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return s


def test_live_viewers_that_never_read_are_dropped_within_the_write_timeout(
        tmp_path: Path) -> None:
    async def test(server: WebServer, view: StationView) -> None:
        fill_history(view)
        console = server.console
        assert isinstance(console, Console)
        socks = [await asyncio.to_thread(non_reading_viewer, server.port) for _ in range(8)]
        try:
            await asyncio.sleep(0.5)
            r = await call("GET", server.url + "/api/live")
            assert r.status_code == 503  # all 8 slots held
            t0 = time.monotonic()
            while console._viewers and time.monotonic() - t0 < 10:
                await asyncio.sleep(0.1)
            waited = time.monotonic() - t0
            assert console._viewers == 0 and waited < 2.0 + 1.0, waited

            def one_message() -> dict[str, Any]:
                with requests.get(server.url + "/api/live", stream=True, timeout=5) as r:
                    assert r.status_code == 200
                    for line in r.iter_lines():
                        if line.startswith(b"data: "):
                            return json.loads(line[6:])  # type: ignore[no-any-return]
                return {}

            first = await asyncio.to_thread(one_message)
            assert first["station"] == view.station_id
        finally:
            for s in socks:
                s.close()

    run_console(tmp_path, test, limits=HttpLimitsConfig(write_timeout_s=2.0))


def test_viewers_share_one_backfill(tmp_path: Path) -> None:
    """A viewer joining a watched station gets the 60 s of columns at once, no FFT of its own."""
    async def test(server: WebServer, view: StationView) -> None:
        fill_history(view)
        console = server.console
        assert isinstance(console, Console)
        hub = console.hubs[view.station_id]

        def read(n: int) -> list[dict[str, Any]]:
            msgs = []
            with requests.get(server.url + "/api/live", stream=True, timeout=10) as r:
                for line in r.iter_lines():
                    if line.startswith(b"data: "):
                        msgs.append(json.loads(line[6:]))
                        if len(msgs) == n:
                            break
            return msgs

        watcher = asyncio.create_task(asyncio.to_thread(read, 12))
        while not hub._ring:
            await asyncio.sleep(0.05)
        many = await asyncio.gather(*(asyncio.to_thread(read, 1) for _ in range(7)))
        for msgs in many:
            assert msgs[0]["cols"] >= 470 and msgs[0]["end_s"] is not None
        backfill = sum(m["cols"] for m in await watcher)
        assert 470 <= backfill <= 480  # 60 s at 8 columns a second, then nothing new

    run_console(tmp_path, test)
