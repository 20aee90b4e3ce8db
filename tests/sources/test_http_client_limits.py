"""HttpClient refusing what it must not read: bad lengths, gzip, oversize, slow bodies, URLs."""

from __future__ import annotations

import gzip
import logging
import threading
import time

import pytest
from support.hls_server import Fault, LiveHlsServer
from support.http_fetch import BODY, _client

from listener.config import FetchConfig
from listener.errors import FetchError
from listener.sources.http_client import HttpClient


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
