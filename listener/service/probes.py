"""The daemon's probe and metrics server: now :class:`~listener.service.web.server.WebServer`.

Kept as a name so the daemon and replay code keep importing ``ProbeServer``;
``WebServer(registry, host, port, ready)`` without a console is exactly the
old probe server (``/metrics``, ``/healthz``, ``/readyz``, 404 elsewhere).
"""

from __future__ import annotations

from listener.service.web.server import ReadyCheck, WebServer

ProbeServer = WebServer

__all__ = ["ProbeServer", "ReadyCheck"]
