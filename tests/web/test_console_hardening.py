"""The console port under hostile clients (issue 21), against a real server on 127.0.0.1.

Malformed requests, DNS rebinding, framing, hostile review bodies, live
viewers that never read, the RSS of eight viewers, and 1,100 idle
connections to a daemon held to 1,024 descriptors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from prometheus_client import CollectorRegistry
from support.console_support import make_view

from listener.config import HttpLimitsConfig
from listener.web.console import Console, static_dir
from listener.web.guard import Connections
from listener.web.httplog import Throttled, escape
from listener.web.server import WebServer
from listener.web.views import StationView

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


# -- reviews ----------------------------------------------------------------


async def review_url(server: WebServer) -> tuple[str, dict[str, str]]:
    det = (await call("GET", server.url + "/api/detections")).json()["detections"][0]
    csrf = (await call("GET", server.url + "/api/session")).json()["csrf"]
    return f"{server.url}/api/detections/{det['id']}/review", {"X-CSRF-Token": csrf}


def test_review_text_with_control_characters_or_surrogates_is_a_400_naming_the_field(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def test(server: WebServer, view: StationView) -> None:
        url, csrf = await review_url(server)
        hdr = {**csrf, "Content-Type": "application/json"}
        cases = {
            "comments": {"SRKWFound": "yes", "comments": "a\ud800b"},
            "moderator": {"SRKWFound": "yes", "moderator": "ana\nINFO forged: review of x"},
            "tags": {"SRKWFound": "yes", "tags": "call\u0000"},
        }
        for field, doc in cases.items():
            r = await call("POST", url, data=json.dumps(doc).encode(), headers=hdr)
            assert r.status_code == 400, (field, r.status_code, r.text)
            assert r.text.startswith(f"{field}: ") and "U+" in r.text
        bidi = {"SRKWFound": "yes", "moderator": "ana\u202egnp.exe"}
        r = await call("POST", url, json=bidi, headers=csrf)
        assert r.status_code == 400 and r.text.startswith("moderator: ")
        r = await call("POST", url, json={"comments": "x"}, headers=csrf)
        assert r.status_code == 400
        assert r.text == "SRKWFound: missing; choose yes, no or don't know\n"
        r = await call("POST", url, json={"SRKWFound": None}, headers=csrf)
        assert r.text == "SRKWFound: got null; choose yes, no or don't know\n"
        r = await call("POST", url, json={"SRKWFound": "yes", "comments": 3}, headers=csrf)
        assert r.text == "comments: must be text; got a number\n"
        for body in (b"[" * 16000, b"\xff\xfe{}", b'{"SRKWFound": "yes"', b"[1]"):
            r = await call("POST", url, data=body, headers=hdr)
            assert r.status_code == 400 and "Traceback" not in r.text, body[:10]
        # A comment keeps its newlines; the moderator is logged on one line.
        r = await call("POST", url, json={"SRKWFound": "no", "comments": "two\nlines",
                                          "moderator": "ana \\ bo"}, headers=csrf)
        assert r.status_code == 201

    caplog.set_level(logging.INFO)
    run_console(tmp_path, test)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("review of")]
    assert len(logged) == 1 and "forged" not in logged[0] and "ana \\\\ bo" in logged[0]
    assert escape("a\nb\u2028c\ud800\\") == "a\\x0ab\\u2028c\\ud800\\\\"


def test_review_body_cap_counts_the_bytes_read_whatever_the_encoding(tmp_path: Path) -> None:
    def chunked(port: int, path: str, csrf: str, total: int) -> bytes:
        doc = json.dumps({"SRKWFound": "yes", "comments": "x" * (total - 40)}).encode()
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(doc[i:i + 4096]), doc[i:i + 4096])
                          for i in range(0, len(doc), 4096))
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-CSRF-Token: {csrf}\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        return raw(port, head.encode() + chunks + b"0\r\n\r\n")

    async def test(server: WebServer, view: StationView) -> None:
        url, csrf = await review_url(server)
        path = url.removeprefix(server.url)
        out = await asyncio.to_thread(chunked, server.port, path, csrf["X-CSRF-Token"],
                                      500_000)
        assert out.split(b"\r\n")[0].endswith(b"413 Request Entity Too Large"), out[:200]
        assert not view.reviews_path.exists()  # type: ignore[union-attr]
        big = {"SRKWFound": "yes", "comments": "x" * 20000}
        r = await call("POST", url, json=big, headers=csrf)
        assert r.status_code == 413
        out = await asyncio.to_thread(chunked, server.port, path, csrf["X-CSRF-Token"], 3000)
        assert b" 400 " in out.split(b"\r\n")[0]  # under the cap: read, and too long a comment
        assert out.endswith(b"comments: at most 2000 characters; got 2960\n")
        out = await asyncio.to_thread(chunked, server.port, path, csrf["X-CSRF-Token"], 1000)
        assert b" 201 " in out.split(b"\r\n")[0]

    run_console(tmp_path, test)


# -- live viewers -----------------------------------------------------------


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


# -- resources: memory and descriptors (subprocesses) ------------------------

PROCESS = Path(__file__).resolve().parents[1] / "support" / "console_process.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@pytest.mark.slow
def test_eight_live_viewers_cost_under_100_mb(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(PROCESS), "console", str(port), str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        base = status_kb(proc.pid, "VmRSS")
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # reset the peak (VmHWM)
        counts: list[int] = []

        def watch() -> None:
            n = 0
            with requests.get(f"http://127.0.0.1:{port}/api/live", stream=True,
                              timeout=30) as r:
                for line in r.iter_lines():
                    n += line.startswith(b"data: ")
                    if n == 6:
                        break
            counts.append(n)

        threads = [threading.Thread(target=watch) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        peak = status_kb(proc.pid, "VmHWM")
    finally:
        proc.kill()
        proc.wait()
    assert counts == [6] * 8
    assert (peak - base) / 1024 < 100, f"RSS {base / 1024:.0f} MB, peak {peak / 1024:.0f} MB"


@pytest.mark.slow
def test_1100_idle_connections_leave_a_daemon_at_1024_descriptors_serving(
        tmp_path: Path) -> None:
    from support.daemon_support import station_config, tone_recording, ts_segments
    from support.hls_server import LiveHlsServer

    from listener.config import MetricsConfig

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1400:
        pytest.skip(f"this test opens 1,100 sockets; the hard descriptor limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard) if hard > 0 else 4096, hard))
    segments = ts_segments(tone_recording(tmp_path / "t.wav", 120.0, []), tmp_path / "hls")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    with LiveHlsServer() as hls:
        hls.start_folder("rpi_fd", 1_600_000_000)
        rest = iter(segments)
        for _ in range(2):
            hls.publish("rpi_fd", *next(rest))
        cfg = station_config(hls.base_url, "rpi_fd", tmp_path,
                             metrics=MetricsConfig(host="127.0.0.1", port=port))
        proc = subprocess.Popen(
            [sys.executable, str(PROCESS), "daemon", json.dumps(cfg.model_dump(mode="json"))],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)))
        try:
            deadline = time.monotonic() + 60
            while fetched(url) < 2 and time.monotonic() < deadline:
                assert proc.poll() is None
                time.sleep(0.2)
            assert fetched(url) >= 2
            baseline = len(list(Path(f"/proc/{proc.pid}/fd").iterdir()))
            flood = threading.Thread(target=hold_idle, args=(port, 1100, stop), daemon=True)
            flood.start()
            time.sleep(1.0)
            before = fetched(url)
            for _ in range(4):  # the stream goes on while the sockets are held
                hls.publish("rpi_fd", *next(rest))
                r = requests.get(url + "/healthz", timeout=3)
                assert r.status_code == 200 and r.text == "ok\n"
                time.sleep(1.0)
            deadline = time.monotonic() + 20
            while fetched(url) < before + 3 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert fetched(url) >= before + 3
            # About max_connections (256, a quarter of 1,024) of them are the flood's, plus
            # those accepted since the last sweep, which a loaded host makes late: far from
            # the limit either way (the code before the cap held about 855).
            held = len(list(Path(f"/proc/{proc.pid}/fd").iterdir()))
            assert held <= baseline + 600, (baseline, held, _fd_kinds(proc.pid))
        finally:
            stop.set()
            proc.terminate()
            out = proc.communicate(timeout=60)[0]
    assert "out of system resource" not in out and "Traceback" not in out, out[-3000:]
    assert "evicted at the cap" in out  # reported once, not once per connection
    assert out.count("HTTP clients refused") <= 2


def hold_idle(port: int, count: int, stop: threading.Event) -> None:
    """Keep ``count`` idle connections open to ``port``: each one closed is opened again."""
    sel = selectors.DefaultSelector()

    def open_one() -> None:
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        sel.register(s, selectors.EVENT_READ)

    for _ in range(count):
        open_one()
    while not stop.is_set():
        for key, _ in sel.select(0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                gone = not sock.recv(4096)
            except BlockingIOError:
                gone = False
            except OSError:
                gone = True
            if gone:
                sel.unregister(sock)
                sock.close()
                open_one()
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]


def fetched(url: str) -> float:
    try:
        text = requests.get(url + "/metrics", timeout=3).text
    except requests.RequestException:
        return -1.0
    for line in text.splitlines():
        if line.startswith("listener_hls_segments_fetched_total"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_systemd_units_raise_the_descriptor_limit() -> None:
    units = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
    for unit in ("listener@.service", "listener-fleet.service"):
        found = re.findall(r"(?m)^LimitNOFILE=(\d+)$", (units / unit).read_text())
        assert found and int(found[0]) >= 4 * 256 * 4, unit


def _fd_kinds(pid: int) -> Counter[str]:
    """What a process's descriptors are (for the failure message); some close meanwhile."""
    kinds: Counter[str] = Counter()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            kinds[os.readlink(fd).split(":")[0]] += 1
        except OSError:
            kinds["closed meanwhile"] += 1
    return kinds
