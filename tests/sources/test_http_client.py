"""HttpClient against a real loopback server: retries, caps, breaker, stop."""

from __future__ import annotations

import asyncio
import gzip
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from support.hls_server import Fault, LiveHlsServer

from listener.config import FetchConfig
from listener.errors import CircuitOpenError, FetchError
from listener.retry import parse_retry_after
from listener.sources.http_client import FetchResult, HttpClient

BODY = bytes(range(256)) * 20  # 5120 bytes


def _client(config: FetchConfig, **changes: object) -> tuple[HttpClient, list[FetchResult]]:
    results: list[FetchResult] = []
    return HttpClient(config.model_copy(update=changes), on_result=results.append), results


def test_get_returns_body_reuses_connection_and_reports(
        hls_server: LiveHlsServer, fast_fetch_config: FetchConfig) -> None:
    url = hls_server.put("/a.bin", BODY)
    client, results = _client(fast_fetch_config)
    with client:
        assert [client.get(url, "segment") for _ in range(3)] == [BODY] * 3
    assert len({r.client_port for r in hls_server.requests}) == 1  # one kept-alive connection
    assert [(r.ok, r.kind, r.nbytes, r.attempts, r.status) for r in results] == \
        [(True, "segment", len(BODY), 1, 200)] * 3


def test_connection_drops_are_retried_then_succeed(
        hls_server: LiveHlsServer, fast_fetch_config: FetchConfig) -> None:
    url = hls_server.put("/a.bin", BODY)
    hls_server.drop("/a.bin", times=2)
    client, results = _client(fast_fetch_config)
    with client:
        assert client.get(url, "segment") == BODY
    assert results[-1].attempts == 3 and results[-1].ok


def test_500_burst_then_success(hls_server: LiveHlsServer,
                                fast_fetch_config: FetchConfig) -> None:
    url = hls_server.put("/a.bin", BODY)
    hls_server.fail("/a.bin", 500, times=3)
    client, results = _client(fast_fetch_config, retries=3)
    with client:
        assert client.get(url, "segment") == BODY
    assert [r.status for r in hls_server.requests] == [500, 500, 500, 200]
    assert results[-1].attempts == 4


def test_500_beyond_retries_fails_naming_url_and_reason(
        hls_server: LiveHlsServer, fast_fetch_config: FetchConfig) -> None:
    url = hls_server.put("/a.bin", BODY)
    hls_server.fail("/a.bin", 503, times=10)
    client, results = _client(fast_fetch_config, retries=2)
    with client, pytest.raises(FetchError) as info:
        client.get(url, "segment")
    assert url in str(info.value) and "HTTP 503" in str(info.value)
    assert "after 3 attempts" in str(info.value) and info.value.status == 503
    assert hls_server.count("/a.bin") == 3
    assert not results[-1].ok and results[-1].error == info.value.reason


def test_404_retried_only_when_asked(hls_server: LiveHlsServer,
                                     http_client: HttpClient) -> None:
    url = hls_server.put("/late.ts", BODY)
    hls_server.fail("/late.ts", 404, times=2)
    with pytest.raises(FetchError) as info:
        http_client.get(url, "segment")
    assert info.value.status == 404 and hls_server.count("/late.ts") == 1
    # The segment "appears" after one more 404: retried when the caller says so.
    assert http_client.get(url, "segment", retry_404=True) == BODY
    assert [r.status for r in hls_server.requests] == [404, 404, 200]


def test_other_4xx_fail_at_once(hls_server: LiveHlsServer, http_client: HttpClient) -> None:
    url = hls_server.put("/secret", BODY)
    hls_server.fail("/secret", 403, times=5)
    with pytest.raises(FetchError, match="HTTP 403"):
        http_client.get(url, "segment", retry_404=True)
    assert hls_server.count("/secret") == 1


def test_429_honours_retry_after_up_to_backoff_max(
        hls_server: LiveHlsServer, fast_fetch_config: FetchConfig) -> None:
    url = hls_server.put("/a.bin", BODY)
    client, _ = _client(fast_fetch_config, backoff_max_s=0.3)
    with client:
        hls_server.fail("/a.bin", 429, headers={"Retry-After": "1"})
        t0 = time.monotonic()
        assert client.get(url, "segment") == BODY
        assert 0.28 <= time.monotonic() - t0 < 0.9  # waited, but capped at 0.3 s
        hls_server.fail("/a.bin", 429, headers={"Retry-After": "3600"})
        t0 = time.monotonic()
        assert client.get(url, "segment") == BODY
        assert time.monotonic() - t0 < 0.9


def test_parse_retry_after_forms() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    later = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(later, now=now) == 30.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert parse_retry_after("\u00b9") is None  # str.isdigit says yes, float() says no


def test_slow_server_read_timeout_is_retried(
        hls_server: LiveHlsServer, fast_fetch_config: FetchConfig) -> None:
    url = hls_server.put("/slow.m3u8", b"#EXTM3U\n")
    hls_server.delay("/slow.m3u8", 0.6)
    client, results = _client(fast_fetch_config, read_timeout_s=0.2)
    with client:
        assert client.get(url, "playlist") == b"#EXTM3U\n"
    assert results[-1].attempts == 2


def test_truncated_body_is_retried_then_an_error(
        hls_server: LiveHlsServer, http_client: HttpClient) -> None:
    url = hls_server.put("/t.ts", BODY)
    hls_server.truncate("/t.ts")
    assert http_client.get(url, "segment") == BODY  # second attempt is whole
    hls_server.truncate("/t.ts", times=10)
    with pytest.raises(FetchError, match="truncated") as info:
        http_client.get(url, "segment")
    assert info.value.__cause__ is not None  # the urllib3/requests error, chained


@pytest.mark.parametrize("value", ["-5", "1_0", "\u00b9", "9" * 30])
def test_a_malformed_content_length_is_refused_without_retry(
        hls_server: LiveHlsServer, fast_fetch_config: FetchConfig, value: str) -> None:
    url = hls_server.put("/len.ts", BODY)
    hls_server.bad_length("/len.ts", value, times=5)
    client, _ = _client(fast_fetch_config)
    with client, pytest.raises(FetchError, match="bad Content-Length"):
        client.get(url, "segment")
    assert hls_server.count("/len.ts") == 1


def test_a_gzipped_body_is_refused_naming_url_and_encoding(
        hls_server: LiveHlsServer, fast_fetch_config: FetchConfig) -> None:
    # S3 serves an object stored gzipped with its Content-Encoding, whatever
    # Accept-Encoding asked for.
    packed = gzip.compress(b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nlive000.ts\n")
    url = hls_server.put("/live.m3u8", b"")
    hls_server.inject("/live.m3u8", Fault("status", status=200, body=packed,
                                          headers={"Content-Encoding": "gzip"}), times=5)
    client, _ = _client(fast_fetch_config)
    with client, pytest.raises(FetchError, match="Content-Encoding 'gzip'") as info:
        client.get(url, "playlist")
    assert url in str(info.value)
    assert hls_server.count("/live.m3u8") == 1


def test_oversize_bodies_are_refused_without_retry(
        hls_server: LiveHlsServer, fast_fetch_config: FetchConfig) -> None:
    client, _ = _client(fast_fetch_config, max_playlist_bytes=1024)
    big = hls_server.put("/big.m3u8", b"#EXTM3U\n" + b"#" * 4000)
    with client:
        with pytest.raises(FetchError, match="larger than 1024 bytes"):
            client.get(big, "playlist")  # Content-Length says so up front
        hls_server.no_length("/big.m3u8")
        with pytest.raises(FetchError, match="larger than 1024 bytes"):
            client.get(big, "playlist")  # no Content-Length: the streamed cap stops it
        seg = hls_server.put("/big.ts", BODY)
        with pytest.raises(FetchError, match="larger than 5000 bytes"):
            client.get(seg, "segment", max_bytes=5000)
        assert client.get(seg, "segment", max_bytes=len(BODY)) == BODY
    assert hls_server.count("/big.m3u8") == 2


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "http:///nohost",
                                 "javascript:alert(1)"])
def test_non_http_urls_are_refused(http_client: HttpClient, url: str) -> None:
    with pytest.raises(FetchError) as info:
        http_client.get(url, "playlist")
    assert url in str(info.value)


def test_circuit_breaker_opens_then_half_opens(
        hls_server: LiveHlsServer, fast_fetch_config: FetchConfig,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="listener.sources.http_client")
    url = hls_server.put("/p.m3u8", b"#EXTM3U\n")
    client, results = _client(fast_fetch_config, retries=0, breaker_failures=3,
                              breaker_reset_s=0.3)
    with LiveHlsServer() as other, client:
        other_url = other.put("/ok", b"fine")
        hls_server.fail("/p.m3u8", 500, times=4)
        for _ in range(3):
            with pytest.raises(FetchError, match="HTTP 500"):
                client.get(url, "playlist")
        with pytest.raises(CircuitOpenError, match="circuit breaker open") as refused:
            client.get(url, "playlist")
        assert "failures (last: HTTP 500" in str(refused.value)  # the cause, not just "open"
        assert hls_server.count("/p.m3u8") == 3  # refused without a request
        assert results[-1].circuit_open
        assert client.get(other_url, "playlist") == b"fine"  # per host
        time.sleep(0.35)
        with pytest.raises(FetchError, match="HTTP 500"):  # the one half-open trial fails
            client.get(url, "playlist")
        with pytest.raises(CircuitOpenError):  # ... so it is open again at once
            client.get(url, "playlist")
        time.sleep(0.35)
        assert client.get(url, "playlist") == b"#EXTM3U\n"  # trial succeeds: closed
        assert client.get(url, "playlist") == b"#EXTM3U\n"
    assert hls_server.count("/p.m3u8") == 6
    opened = [r for r in caplog.records if "circuit breaker opened" in r.getMessage()]
    # one WARNING per outage; the re-open after the failed trial is DEBUG only
    assert [r.levelno for r in opened] == [logging.WARNING, logging.DEBUG]
    assert any("circuit breaker closed" in r.getMessage() for r in caplog.records)


def test_404_does_not_trip_the_breaker(hls_server: LiveHlsServer,
                                       fast_fetch_config: FetchConfig) -> None:
    client, _ = _client(fast_fetch_config, retries=0, breaker_failures=2)
    with client:
        for _ in range(4):
            with pytest.raises(FetchError, match="HTTP 404") as info:
                client.get(hls_server.url("/missing"), "segment")
            assert not isinstance(info.value, CircuitOpenError)


def test_stop_ends_backoff_sleep_early(hls_server: LiveHlsServer,
                                       fast_fetch_config: FetchConfig) -> None:
    url = hls_server.put("/a.bin", BODY)
    hls_server.fail("/a.bin", 500, times=10)
    client, _ = _client(fast_fetch_config, backoff_initial_s=10.0, backoff_max_s=10.0)
    errors: list[Exception] = []

    def run() -> None:
        try:
            client.get(url, "segment")
        except FetchError as err:
            errors.append(err)

    worker = threading.Thread(target=run)
    t0 = time.monotonic()
    worker.start()
    time.sleep(0.1)
    client.close()
    worker.join(2.0)
    assert not worker.is_alive() and time.monotonic() - t0 < 1.0
    assert "stopped" in str(errors[0])


def test_aget_does_not_block_the_event_loop(hls_server: LiveHlsServer,
                                            http_client: HttpClient) -> None:
    url = hls_server.put("/a.bin", BODY)
    hls_server.delay("/a.bin", 0.3)

    async def main() -> tuple[bytes, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        body = await http_client.aget(url, "segment")
        task.cancel()
        return body, ticks

    body, ticks = asyncio.run(main())
    assert body == BODY and ticks >= 10


def test_a_failing_observer_does_not_break_fetching(
        hls_server: LiveHlsServer, fast_fetch_config: FetchConfig) -> None:
    def broken(result: FetchResult) -> None:
        raise RuntimeError("metrics down")

    url = hls_server.put("/a.bin", BODY)
    with HttpClient(fast_fetch_config, on_result=broken) as client:
        assert client.get(url, "segment") == BODY


def test_a_trickled_body_is_cut_at_the_per_fetch_deadline(
        hls_server: LiveHlsServer, caplog: pytest.LogCaptureFixture) -> None:
    # 20 kB at 1 kB per 0.1 s would take 2 s; every read is well within the
    # read timeout, so only the whole-download deadline can stop it.
    url = hls_server.put("/slow.ts", b"x" * 20_000)
    hls_server.trickle("/slow.ts", 0.1)
    config = FetchConfig(read_timeout_s=1.0, max_fetch_s=0.5, retries=1,
                         backoff_initial_s=0.01, backoff_max_s=0.01)
    with HttpClient(config, chunk_bytes=1024) as client, \
            caplog.at_level(logging.WARNING, logger="listener"):
        assert client.get(url, "segment") == b"x" * 20_000  # the retry is served whole
    assert any("per-fetch deadline" in r.getMessage() and url in r.getMessage()
               for r in caplog.records)
    assert hls_server.count("/slow.ts") == 2


class _TrickleServer:
    """A loopback HTTP server sending a body at ``rate`` bytes per second, 30 bytes at a
    time (``chunked``: with chunked transfer encoding instead of a Content-Length)."""

    def __init__(self, size: int, rate: float, chunked: bool = False) -> None:
        import socket

        self.size, self.rate, self.chunked = size, rate, chunked
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/slow.ts"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: object) -> None:
        import socket

        assert isinstance(conn, socket.socket)
        with conn:
            conn.recv(4096)
            length = "Transfer-Encoding: chunked" if self.chunked else \
                f"Content-Length: {self.size}"
            conn.sendall(f"HTTP/1.1 200 OK\r\n{length}\r\n\r\n".encode())
            sent = 0
            try:
                while sent < self.size and not self.stop.is_set():
                    piece = b"x" * 30
                    conn.sendall(b"1e\r\n" + piece + b"\r\n" if self.chunked else piece)
                    sent += len(piece)
                    time.sleep(len(piece) / self.rate)
            except OSError:
                return  # the client gave up

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("chunked", [False, True])
def test_max_fetch_s_is_a_deadline_over_the_whole_body(
        chunked: bool, caplog: pytest.LogCaptureFixture) -> None:
    """300 B/s with max_fetch_s 3: given up within 3.5 s (not when a 16 KiB read
    completes, 54 s later), and the WARNING states the rate actually received."""
    server = _TrickleServer(20_000, 300.0, chunked)
    config = FetchConfig(read_timeout_s=15.0, max_fetch_s=3.0, retries=0)
    try:
        with HttpClient(config) as client, caplog.at_level(logging.WARNING, logger="listener"):
            started = time.monotonic()
            with pytest.raises(FetchError, match="too slow"):
                client.get(server.url, "segment")
            took = time.monotonic() - started
    finally:
        server.close()
    assert took < 3.5, took
    warning = next(r.getMessage() for r in caplog.records if "deadline" in r.getMessage())
    import re

    got = re.search(r"\((\d+) bytes in ([\d.]+) s, ([\d.]+) kB/s\)", warning)
    assert got is not None, warning
    nbytes, rate = int(got.group(1)), float(got.group(3))
    assert 600 <= nbytes <= 1200, warning  # what 3 s at 300 B/s delivers
    assert 0.2 <= rate <= 0.4, warning


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_refused_connection_is_a_short_reason_with_the_cause_chained(
        fast_fetch_config: FetchConfig) -> None:
    client, _ = _client(fast_fetch_config, retries=0)
    url = f"http://127.0.0.1:{_free_port()}/latest.txt"
    with client, pytest.raises(FetchError) as info:
        client.get(url, "playlist")
    assert str(info.value) == f"{url}: connection failed: connection refused"
    assert "Max retries" in repr(info.value.__cause__)  # the details stay for a traceback


def test_an_unresolvable_host_says_so(fast_fetch_config: FetchConfig) -> None:
    client, _ = _client(fast_fetch_config, retries=0)
    with client, pytest.raises(FetchError) as info:
        client.get("http://no-such-host.invalid/latest.txt", "playlist")
    assert "connection failed: cannot resolve the host name (" in str(info.value)
    assert len(str(info.value)) < 120 and "HTTPConnectionPool" not in str(info.value)


def test_a_read_timeout_is_a_short_reason(
        hls_server: LiveHlsServer, fast_fetch_config: FetchConfig) -> None:
    url = hls_server.put("/stuck.m3u8", b"#EXTM3U\n")
    hls_server.delay("/stuck.m3u8", 0.6)
    client, _ = _client(fast_fetch_config, read_timeout_s=0.2, retries=0)
    with client, pytest.raises(FetchError) as info:
        client.get(url, "playlist")
    assert str(info.value) == f"{url}: timed out: no data within the read timeout"
