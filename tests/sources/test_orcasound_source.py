"""OrcasoundSource on a live loopback origin: following, node restarts, resuming, gaps."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
from support.hls_reading import NODE, POLL, TS_A, TS_B, Item, orcasound, seqs, take
from support.hls_server import REAL_FOLDER_TS, LiveHlsServer, TsSegment

from listener.sources.hls import Gap, OrcasoundSource, Position, Segment
from listener.sources.http_client import HttpClient


def test_orcasound_follows_a_growing_playlist(
        hls_server: LiveHlsServer, http_client: HttpClient,
        ffmpeg_segments: list[TsSegment]) -> None:
    hls_server.start_folder(NODE, TS_A)
    for seg in ffmpeg_segments[:2]:
        hls_server.publish(NODE, seg.data, seg.duration_s)
    hls_server.fail(f"/{NODE}/hls/{TS_A}/live.m3u8", 500, times=5)  # one failed poll

    def grow(item: Item, out: list[Item]) -> None:
        if len(out) < 4:
            seg = ffmpeg_segments[len(out) + 1]
            hls_server.publish(NODE, seg.data, seg.duration_s)

    async def main() -> tuple[list[Item], list[bytes], OrcasoundSource]:
        source = orcasound(hls_server, http_client, start_segments_back=1)
        items = await take(source, 4, on_item=grow)
        data = [await source.fetch(s) for s in items if isinstance(s, Segment)]
        return items, data, source

    items, data, source = asyncio.run(main())
    assert seqs(items) == [1, 2, 3, 4]
    durations = [s.duration_s for s in ffmpeg_segments]
    segs = [s for s in items if isinstance(s, Segment)]
    start = datetime.fromtimestamp(TS_A, UTC)
    for s in segs:
        assert s.stream_key == f"{NODE}/hls/{TS_A}"
        assert s.offset_s == pytest.approx(sum(durations[: s.sequence]))
        assert s.utc_start == start + timedelta(seconds=s.offset_s)
        assert s.stream_start_utc == start and s.program_date_time is None
    assert [s.discontinuity for s in segs] == [True, False, False, False]  # fresh start
    assert data == [seg.data for seg in ffmpeg_segments[1:5]]
    assert source.last_playlist_ok is not None
    assert source.live_edge_utc == start + timedelta(seconds=sum(durations[:5]))


def test_orcasound_node_restart_finishes_the_old_folder_first(
        hls_server: LiveHlsServer, http_client: HttpClient,
        ffmpeg_segments: list[TsSegment]) -> None:
    segs = ffmpeg_segments
    hls_server.start_folder(NODE, TS_A)
    hls_server.publish(NODE, segs[0].data, segs[0].duration_s)

    def restart(item: Item, out: list[Item]) -> None:
        if len(out) == 1:
            hls_server.start_folder(NODE, TS_B)  # latest.txt now names B
            hls_server.publish(NODE, segs[0].data, segs[0].duration_s)
            # The old folder's last segment is uploaded after latest.txt changed.
            hls_server.publish(NODE, segs[1].data, segs[1].duration_s, folder=TS_A)

    source = orcasound(hls_server, http_client, start_segments_back=1)
    items = asyncio.run(take(source, 3, on_item=restart))
    got = [(s.stream_key, s.sequence, s.discontinuity, s.offset_s) for s in items
           if isinstance(s, Segment)]
    assert got == [(f"{NODE}/hls/{TS_A}", 0, True, 0.0),
                   (f"{NODE}/hls/{TS_A}", 1, False, segs[0].duration_s),
                   (f"{NODE}/hls/{TS_B}", 0, True, 0.0)]
    assert source.stream_key == f"{NODE}/hls/{TS_B}"
    # After the switch was seen, the old playlist was polled until quiet (bounded).
    old = [r for r in hls_server.requests if r.path == f"/{NODE}/hls/{TS_A}/live.m3u8"]
    assert 3 <= len(old) <= 10


def test_orcasound_old_folder_with_endlist_switches_at_once(
        hls_server: LiveHlsServer, http_client: HttpClient) -> None:
    hls_server.start_folder(NODE, TS_A)
    hls_server.publish(NODE, b"a0", 10.0)
    switched_at: list[float] = []

    def restart(item: Item, out: list[Item]) -> None:
        if len(out) == 1:
            hls_server.end_folder(NODE)
            switched_at.append(time.monotonic())
            hls_server.start_folder(NODE, TS_B)
            hls_server.publish(NODE, b"b0", 10.0)

    source = orcasound(hls_server, http_client, start_segments_back=1, finish_polls=3)
    items = asyncio.run(take(source, 2, on_item=restart))
    assert [(i.stream_key[-10:], i.sequence) for i in items if isinstance(i, Segment)] == \
        [(str(TS_A), 0), (str(TS_B), 0)]
    old = [r for r in hls_server.requests
           if r.path == f"/{NODE}/hls/{TS_A}/live.m3u8" and r.at > switched_at[0]]
    assert len(old) == 1  # ENDLIST: no grace polls needed


def test_orcasound_resume_continues_without_gap_or_duplicate(
        hls_server: LiveHlsServer, http_client: HttpClient,
        ffmpeg_segments: list[TsSegment]) -> None:
    hls_server.start_folder(NODE, TS_A)
    for seg in ffmpeg_segments:
        hls_server.publish(NODE, seg.data, seg.duration_s)
    source = orcasound(hls_server, http_client, start_segments_back=1)
    items = asyncio.run(take(source, 2, Position(f"{NODE}/hls/{TS_A}", 2)))
    assert seqs(items) == [3, 4]
    assert not any(isinstance(i, Segment) and i.discontinuity for i in items)


def test_orcasound_resume_into_an_old_folder_finishes_it_then_switches(
        hls_server: LiveHlsServer, http_client: HttpClient,
        ffmpeg_segments: list[TsSegment]) -> None:
    seg = ffmpeg_segments[0]
    hls_server.start_folder(NODE, TS_A)
    for _ in range(4):
        hls_server.publish(NODE, seg.data, seg.duration_s)
    hls_server.start_folder(NODE, TS_B)
    for _ in range(2):
        hls_server.publish(NODE, seg.data, seg.duration_s)
    source = orcasound(hls_server, http_client, start_segments_back=1)
    items = asyncio.run(take(source, 3, Position(f"{NODE}/hls/{TS_A}", 2)))
    assert [(i.stream_key[-10:], i.sequence) for i in items if isinstance(i, Segment)] == \
        [(str(TS_A), 3), (str(TS_B), 0), (str(TS_B), 1)]


def test_orcasound_resume_too_far_behind_yields_a_gap(
        hls_server: LiveHlsServer, http_client: HttpClient,
        ffmpeg_segments: list[TsSegment]) -> None:
    seg = ffmpeg_segments[0]
    hls_server.start_folder(NODE, TS_A)
    for _ in range(6):
        hls_server.publish(NODE, seg.data, seg.duration_s)
    source = orcasound(hls_server, http_client, start_segments_back=1,
                       max_resume_backlog_s=25.0)
    items = asyncio.run(take(source, 2, Position(f"{NODE}/hls/{TS_A}", 1)))
    gap, first = items
    assert isinstance(gap, Gap) and isinstance(first, Segment)
    assert (gap.from_sequence, gap.to_sequence, first.sequence) == (2, 4, 5)
    assert "behind the live edge" in gap.reason
    assert gap.duration_s == pytest.approx(3 * seg.duration_s)
    assert gap.utc_start == datetime.fromtimestamp(TS_A, UTC) + timedelta(
        seconds=2 * seg.duration_s)
    assert first.discontinuity


def test_real_orcasound_segments_time_and_bytes(
        hls_server: LiveHlsServer, http_client: HttpClient,
        real_segments: list[TsSegment]) -> None:
    node = "rpi_orcasound_lab"
    hls_server.start_folder(node, REAL_FOLDER_TS)
    for seg in real_segments:
        hls_server.publish(node, seg.data, seg.duration_s)

    async def main() -> tuple[list[Item], bytes | Gap]:
        source = OrcasoundSource(hls_server.base_url, node, http_client,
                                 poll_interval_s=POLL, start_segments_back=3)
        items = await take(source, 3)
        assert isinstance(items[2], Segment)
        return items, await source.fetch_or_gap(items[2])

    items, data = asyncio.run(main())
    last = items[2]
    assert isinstance(last, Segment) and isinstance(data, bytes)
    assert last.utc_start == datetime(2020, 7, 7, 19, 30, 18, tzinfo=UTC) + timedelta(
        seconds=9.792 + 10.005333)
    assert data == real_segments[2].data and data[0] == 0x47  # MPEG-TS sync byte


def test_segment_that_never_appears_becomes_a_gap_with_its_url(
        hls_server: LiveHlsServer, http_client: HttpClient,
        caplog: pytest.LogCaptureFixture) -> None:
    hls_server.start_folder(NODE, TS_A)
    hls_server.publish(NODE, b"\x47" * 188, 10.0)
    hls_server.publish(NODE, None, 10.0)  # listed, never uploaded

    async def main() -> list[bytes | Gap]:
        source = orcasound(hls_server, http_client, start_segments_back=2,
                           segment_retries=2)
        items = await take(source, 2)
        return [await source.fetch_or_gap(s) for s in items if isinstance(s, Segment)]

    with caplog.at_level(logging.WARNING, logger="listener"):
        first, second = asyncio.run(main())
    url = hls_server.segment_url(NODE, TS_A, 1)
    assert first == b"\x47" * 188
    assert isinstance(second, Gap) and second.url == url
    assert (second.from_sequence, second.to_sequence, second.duration_s) == (1, 1, 10.0)
    assert "HTTP 404" in second.reason
    assert hls_server.count(f"/{NODE}/hls/{TS_A}/live001.ts") == 3  # bounded: 1 + 2 retries
    assert any(url in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_listed_segment_that_appears_late_is_fetched(
        hls_server: LiveHlsServer, http_client: HttpClient) -> None:
    hls_server.start_folder(NODE, TS_A)
    hls_server.publish(NODE, b"late", 10.0)
    hls_server.fail(f"/{NODE}/hls/{TS_A}/live000.ts", 404, times=2)

    async def main() -> bytes | Gap:
        source = orcasound(hls_server, http_client, start_segments_back=1)
        (seg,) = await take(source, 1)
        assert isinstance(seg, Segment)
        return await source.fetch_or_gap(seg)

    assert asyncio.run(main()) == b"late"


def test_stop_event_ends_iteration_promptly(hls_server: LiveHlsServer,
                                            http_client: HttpClient) -> None:
    async def main() -> float:
        stop = asyncio.Event()
        source = OrcasoundSource(hls_server.base_url, NODE, http_client, poll_interval_s=30.0,
                                 stop=stop)  # nothing published: latest.txt is 404
        asyncio.get_running_loop().call_later(0.1, stop.set)
        t0 = time.monotonic()
        assert await take(source, 1) == []
        return time.monotonic() - t0

    assert asyncio.run(main()) < 1.0
