"""A console's WebServer on 127.0.0.1 for one async test, and clients that talk to it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import requests
from prometheus_client import CollectorRegistry

from listener.config import HttpLimitsConfig
from listener.web.console import Console
from listener.web.server import WebServer
from listener.web.views import StationView
from support.console_support import make_view

Test = Callable[[WebServer, StationView], Awaitable[None]]


def run_console(tmp_path: Path, test: Test, host: str = "127.0.0.1",
                limits: HttpLimitsConfig | None = None) -> None:
    async def main() -> None:
        view = make_view(tmp_path)
        console = Console([view], bind_host=host, tick_s=0.2)
        server = WebServer(CollectorRegistry(), host, 0, lambda: (True, "ok"), console=console,
                           limits=limits)
        await server.start()
        try:
            await test(server, view)
        finally:
            await server.stop()

    asyncio.run(main())


async def call(method: str, url: str, **kw: Any) -> requests.Response:
    return await asyncio.to_thread(requests.request, method, url, timeout=5, **kw)


def raw(port: int, data: bytes, host: str = "127.0.0.1") -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers."""
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out
