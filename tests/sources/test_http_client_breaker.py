"""HttpClient's per-host circuit breaker against a real loopback server."""

from __future__ import annotations

import logging
import time

import pytest
from support.hls_server import LiveHlsServer
from support.http_fetch import _client

from listener.config import FetchConfig
from listener.errors import CircuitOpenError, FetchError


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
