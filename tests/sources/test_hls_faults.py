"""Faults the Orcasound and HLS sources must absorb on a live loopback origin (issue 14)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from support.hls_reading import NODE, TS_A, TS_B, Item, orcasound, seqs, take
from support.hls_server import LiveHlsServer

from listener.config import FetchConfig
from listener.sources.hls import Gap, OrcasoundSource, Segment
from listener.sources.http_client import FetchResult, HttpClient


def test_orcasound_ignores_a_transient_older_latest_txt(
        hls_server: LiveHlsServer, http_client: HttpClient) -> None:
    hls_server.start_folder(NODE, TS_A)
    hls_server.publish(NODE, b"a0", 10.0)
    hls_server.start_folder(NODE, TS_B)
    hls_server.publish(NODE, b"b0", 10.0)

    def grow(item: Item, out: list[Item]) -> None:
        if len(out) == 1:  # a stale cached latest.txt names the older folder a while
            hls_server.serve_instead(f"/{NODE}/latest.txt", f"{TS_A}\n".encode(), times=5)
        if len(out) < 3:
            hls_server.publish(NODE, f"b{len(out)}".encode(), 10.0)

    source = orcasound(hls_server, http_client, start_segments_back=1)
    items = asyncio.run(take(source, 3, on_item=grow))
    assert [(i.stream_key[-10:], i.sequence) for i in items] == \
        [(str(TS_B), 0), (str(TS_B), 1), (str(TS_B), 2)]
    assert hls_server.count(f"/{NODE}/hls/{TS_A}/live.m3u8") == 0


def _one_segment_then_a_restart(server: LiveHlsServer) -> Callable[[], None]:
    """Folder A with one segment listed; the returned call restarts the node into B."""
    server.start_folder(NODE, TS_A)
    server.publish(NODE, b"a0", 10.0)

    def restart() -> None:
        server.start_folder(NODE, TS_B)
        server.publish(NODE, b"b0", 10.0)
    return restart


def test_orcasound_fetches_old_folder_segments_published_after_the_switch(
        hls_server: LiveHlsServer, http_client: HttpClient) -> None:
    node_restart = _one_segment_then_a_restart(hls_server)

    def restart(item: Item, out: list[Item]) -> None:
        if len(out) == 1:
            node_restart()
            # The uploader publishes the old folder's last segment ~0.3 s later:
            # many polls after the switch, within the grace time.
            threading.Timer(0.3, hls_server.publish, (NODE, b"a1", 10.0),
                            {"folder": TS_A}).start()

    source = orcasound(hls_server, http_client, start_segments_back=1, finish_s=0.6)
    items = asyncio.run(take(source, 3, on_item=restart))
    assert [(i.stream_key[-10:], i.sequence) for i in items] == \
        [(str(TS_A), 0), (str(TS_A), 1), (str(TS_B), 0)]


def test_old_folder_segments_published_after_the_grace_are_reported_as_gaps(
        hls_server: LiveHlsServer, http_client: HttpClient) -> None:
    node_restart = _one_segment_then_a_restart(hls_server)

    def restart(item: Item, out: list[Item]) -> None:
        if len(out) == 1:
            node_restart()
        if len(out) == 2:  # switched: the old folder's uploader is very late
            hls_server.publish(NODE, b"a1", 10.0, folder=TS_A)
            hls_server.publish(NODE, b"a2", 9.0, folder=TS_A)
        if len(out) == 4:  # and later still: seen by the next look
            hls_server.publish(NODE, b"a3", 10.0, folder=TS_A)

    # finish_s=0.05: looked at again 0.3, 0.6, 1.2 and 2.4 s after the switch
    source = orcasound(hls_server, http_client, start_segments_back=1)
    items = asyncio.run(take(source, 5, on_item=restart))
    assert seqs(items) == [0, 0, ("gap", 1, 1), ("gap", 2, 2), ("gap", 3, 3)]
    late = [i for i in items if isinstance(i, Gap)]
    assert [g.stream_key for g in late] == [f"{NODE}/hls/{TS_A}"] * 3
    assert [g.duration_s for g in late] == [10.0, 9.0, 10.0]
    assert late[0].utc_start == datetime.fromtimestamp(TS_A + 10, UTC)
    assert late[1].url == hls_server.segment_url(NODE, TS_A, 2)
    assert "after the switch" in late[0].reason


def test_open_breaker_delays_segment_fetches_instead_of_dropping_them(
        hls_server: LiveHlsServer) -> None:
    hls_server.start_folder(NODE, TS_A)
    for k in range(3):
        hls_server.publish(NODE, f"seg{k}".encode(), 10.0)
    hls_server.fail(f"/{NODE}/hls/{TS_A}/live000.ts", 500, times=2)
    config = FetchConfig(retries=1, backoff_initial_s=0.01, backoff_max_s=0.01,
                         breaker_failures=2, breaker_reset_s=0.3)

    async def main() -> list[bytes | Gap]:
        with HttpClient(config) as client:
            source = orcasound(hls_server, client, start_segments_back=3)
            items = await take(source, 3)
            return [await source.fetch_or_gap(s) for s in items if isinstance(s, Segment)]

    first, *rest = asyncio.run(main())
    assert isinstance(first, Gap) and first.url == hls_server.segment_url(NODE, TS_A, 0)
    # The breaker opened on segment 0; 1 and 2 wait for it instead of being lost.
    assert rest == [b"seg1", b"seg2"]


def test_garbage_latest_txt_and_playlist_are_counted_as_playlist_errors(
        hls_server: LiveHlsServer, fast_fetch_config: FetchConfig,
        caplog: pytest.LogCaptureFixture) -> None:
    hls_server.start_folder(NODE, TS_A)
    hls_server.publish(NODE, b"a0", 10.0)
    hls_server.serve_instead(f"/{NODE}/latest.txt", b"<html>oops</html>", times=2)
    hls_server.serve_instead(f"/{NODE}/hls/{TS_A}/live.m3u8", b"<html>oops</html>", times=2)
    results: list[FetchResult] = []
    with HttpClient(fast_fetch_config, on_result=results.append) as client, \
            caplog.at_level(logging.WARNING, logger="listener"):
        items = asyncio.run(take(orcasound(hls_server, client), 1))
    assert seqs(items) == [0]
    bad = [r for r in results if not r.ok and r.kind == "playlist"]
    assert {r.url for r in bad} == {hls_server.url(f"/{NODE}/latest.txt"),
                                    hls_server.url(f"/{NODE}/hls/{TS_A}/live.m3u8")}
    assert len(bad) == 4  # each garbage copy counted once
    assert any("no #EXTM3U" in r.getMessage() for r in caplog.records)


def test_oversize_playlist_is_a_warning_that_says_what_to_change(
        hls_server: LiveHlsServer, caplog: pytest.LogCaptureFixture) -> None:
    hls_server.start_folder(NODE, TS_A)
    for _ in range(60):
        hls_server.publish(NODE, b"x", 10.0)
    config = FetchConfig(max_playlist_bytes=1024, retries=0)

    async def main(source: OrcasoundSource) -> None:
        with pytest.raises(TimeoutError):
            await take(source, 1, timeout=0.5)

    with HttpClient(config) as client, caplog.at_level(logging.WARNING, logger="listener"):
        asyncio.run(main(orcasound(hls_server, client)))
    warned = [r for r in caplog.records if "max_playlist_bytes" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
