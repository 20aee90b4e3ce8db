"""HttpClient against a real loopback server: retries, statuses, stop, short failure reasons."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from support.hls_server import LiveHlsServer
from support.http_fetch import BODY, _client

from listener.config import FetchConfig
from listener.errors import FetchError
from listener.retry import parse_retry_after
from listener.sources.http_client import FetchResult, HttpClient


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
