"""The console port against malformed requests, DNS rebinding and framing (issue 21)."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest
from support.console_harness import call, raw, run_console

from listener.config import HttpLimitsConfig
from listener.web.console import static_dir
from listener.web.server import WebServer
from listener.web.views import StationView

MALFORMED = {
    "no Host": b"GET /api/status HTTP/1.1\r\n\r\n",
    "two Hosts": b"GET /api/status HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "NUL": b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\x00b\r\n\r\n",
    "bad chunking": b"POST /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "CL+TE": b"POST /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "negative length": b"POST /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"Content-Length: -5\r\n\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "HTTP/9.9": b"GET / HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
    "non-ASCII path": "GET /caf\u00e9 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
    "folded header": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\r\n b\r\n\r\n",
    "bad method": b"G@T / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
}


def test_malformed_requests_get_400_and_one_log_line_with_a_count(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def test(server: WebServer, view: StationView) -> None:
        for _ in range(20):
            for kind, data in MALFORMED.items():
                out = await asyncio.to_thread(raw, server.port, data)
                assert re.match(rb"HTTP/1\.[01] 400 ", out), (kind, out[:80])
                assert b"Traceback" not in out
        await asyncio.sleep(1.1)
        server.report.flush()

    caplog.set_level(logging.DEBUG)
    run_console(tmp_path, test, limits=HttpLimitsConfig(log_interval_s=1))
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    lines = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(lines) == 2, lines  # the first at once, then one with the count
    counted = sum(int(n) for n in re.findall(r"(\d+) malformed", " ".join(lines)))
    assert counted == 20 * len(MALFORMED)
    assert all("\n" not in line for line in lines)


READS = ("/", "/live", "/detections", "/static/app.js", "/api/session", "/api/status",
         "/api/detections", "/api/reviews/export", "/api/coverage", "/metrics", "/healthz",
         "/readyz")


def test_a_loopback_bind_answers_only_to_loopback_hosts_reads_included(tmp_path: Path) -> None:
    async def test(server: WebServer, view: StationView) -> None:
        dets = (await call("GET", server.url + "/api/detections")).json()["detections"]
        clip = dets[0]["audio"]
        for path in (*READS, clip):
            r = await call("GET", server.url + path, headers={"Host": "evil.example"})
            assert r.status_code == 403, path
            assert "csrf" not in r.text and str(view.events_path) not in r.text
            assert "loopback" in r.text
            r = await call("GET", server.url + path,
                           headers={"Host": f"evil.example:{server.port}"})
            assert r.status_code == 403, path
        for host in ("127.0.0.1", f"127.0.0.1:{server.port}", f"localhost:{server.port}",
                     "[::1]", f"[::1]:{server.port}"):
            r = await call("GET", server.url + "/api/session", headers={"Host": host})
            assert r.status_code == 200 and r.json()["csrf"], host
        # HTTP/1.0 without a Host at all is refused too.
        out = await asyncio.to_thread(raw, server.port, b"GET /api/status HTTP/1.0\r\n\r\n")
        assert out.startswith(b"HTTP/1.0 403") or out.startswith(b"HTTP/1.1 403")

    run_console(tmp_path, test)


def test_a_non_loopback_bind_serves_probes_to_any_host(tmp_path: Path) -> None:
    """Kubernetes and Prometheus send ``Host: <pod IP>:<port>``."""
    async def test(server: WebServer, view: StationView) -> None:
        url = f"http://127.0.0.1:{server.port}"
        for path in ("/healthz", "/readyz", "/metrics", "/api/status"):
            r = await call("GET", url + path, headers={"Host": f"10.1.2.3:{server.port}"})
            assert r.status_code == 200, path

    run_console(tmp_path, test, host="0.0.0.0")


def test_every_response_forbids_framing_and_inline_script(tmp_path: Path) -> None:
    async def test(server: WebServer, view: StationView) -> None:
        answers = [await call("GET", server.url + p) for p in (*READS, "/nope", "/static/x.js")]
        answers.append(await call("GET", server.url + "/", headers={"Host": "evil.example"}))
        answers.append(await call("POST", server.url + "/api/detections/abcdef12/review"))
        for r in answers:
            assert r.headers["X-Frame-Options"] == "DENY", r.url
            csp = r.headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
            assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        # The guard's own answers (a head that never completes) carry them too.
        out = await asyncio.to_thread(raw, server.port, b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert b"408" in out.split(b"\r\n")[0] and b"X-Frame-Options: DENY" in out

    run_console(tmp_path, test, limits=HttpLimitsConfig(read_timeout_s=0.3))
    for page in static_dir().glob("*.html"):
        html = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), page.name  # inline script
        assert not re.search(r"\son[a-z]+\s*=", html), page.name  # inline handlers
        assert "javascript:" not in html
