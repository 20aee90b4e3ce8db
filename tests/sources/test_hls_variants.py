"""HlsSource across changes of the stream behind one URL: a master playlist
that names a new variant, an encoder that restarts its numbering."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from datetime import UTC, datetime
from typing import cast

import pytest
from support.hls_server import LiveHlsServer

from listener.sources.hls import Gap, HlsSource, Segment
from listener.sources.http_client import HttpClient

POLL = 0.02
Records = AsyncGenerator[Segment | Gap, None]


async def take(source: HlsSource, n: int, on_item: Callable[[list[Segment | Gap]], None],
               timeout: float = 5.0) -> list[Segment | Gap]:
    """The first ``n`` records of one ``source.segments()``; ``on_item`` sees each list."""
    out: list[Segment | Gap] = []

    async def run() -> None:
        async with aclosing(cast(Records, source.segments())) as items:
            async for item in items:
                out.append(item)
                on_item(out)
                if len(out) >= n:
                    return

    await asyncio.wait_for(run(), timeout)
    return out


def master_naming(server: LiveHlsServer, variant: str) -> str:
    return server.put("/live/master.m3u8", (
        '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=64000,CODECS="mp4a.40.2"\n'
        f"{variant}\n"))


def test_a_dead_variant_sends_the_source_back_to_the_master(
        hls_server: LiveHlsServer, http_client: HttpClient,
        caplog: pytest.LogCaptureFixture) -> None:
    old = hls_server.add_stream("/live/chunklist_w111.m3u8", window=3)
    old.publish(b"old0", 10.0)
    master = master_naming(hls_server, "chunklist_w111.m3u8")
    source = HlsSource(master, http_client, poll_interval_s=POLL, start_segments_back=1)

    def restart(items: list[Segment | Gap]) -> None:
        if len(items) == 1:
            # The server restarts: the old session's chunklist is gone (404),
            # the master names a new one.
            hls_server.remove_stream(old.path)
            new = hls_server.add_stream("/live/chunklist_w222.m3u8", window=3,
                                         media_sequence=50)
            new.publish(b"new50", 10.0)
            master_naming(hls_server, "chunklist_w222.m3u8")

    with caplog.at_level(logging.WARNING, "listener.sources.hls"):
        items = asyncio.run(take(source, 3, restart))
    assert [i.url for i in items if isinstance(i, Segment)] == [
        old.url_of(0), hls_server.url("/live/seg50.ts")]
    assert source.media_url == hls_server.url("/live/chunklist_w222.m3u8")
    assert any("chunklist_w111.m3u8 failed 3 polls in a row" in r.getMessage()
               for r in caplog.records)


def test_an_encoder_restart_without_pdt_takes_the_clock_again(
        hls_server: LiveHlsServer, http_client: HttpClient) -> None:
    stream = hls_server.add_stream(window=6, media_sequence=100)
    for _ in range(6):
        stream.publish(b"before", 10.0)
    source = HlsSource(hls_server.url(stream.path), http_client, poll_interval_s=POLL,
                       start_segments_back=1)

    def restart(items: list[Segment | Gap]) -> None:
        if len(items) == 1:  # the encoder restarts after an outage, numbering from 0
            hls_server.remove_stream(stream.path)
            again = hls_server.add_stream(stream.path, window=6)
            for _ in range(6):
                again.publish(b"after", 10.0)

    items = asyncio.run(take(source, 7, restart))
    newest = items[-1]
    assert isinstance(newest, Segment) and newest.sequence == 5 and newest.utc_end is not None
    # Without the new estimate it ended 60 s in the future (the listed
    # minute of the old numbering added to the new).
    assert abs((newest.utc_end - datetime.now(UTC)).total_seconds()) < 2.0
