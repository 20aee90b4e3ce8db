"""The Orcasound and generic HLS sources against a live loopback origin."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from contextlib import aclosing
from datetime import UTC, datetime, timedelta

import pytest
from support.hls_server import REAL_FOLDER_TS, LiveHlsServer, TsSegment

from listener.config import FetchConfig
from listener.sources.hls import Gap, HlsSource, OrcasoundSource, Position, Segment
from listener.sources.http_client import FetchResult, HttpClient

NODE = "rpi_test_node"
TS_A = 1_700_000_000
TS_B = 1_700_003_600
POLL = 0.02
Item = Segment | Gap



async def take(source: OrcasoundSource | HlsSource, n: int, resume: Position | None = None,
               on_item: Callable[[Item, list[Item]], None] | None = None,
               timeout: float = 5.0) -> list[Item]:
    """The first ``n`` records of ``source.segments(resume)`` (fewer if it ends)."""
    out: list[Item] = []

    async def run() -> None:
        async with aclosing(source.segments(resume)) as items:
            async for item in items:
                out.append(item)
                if on_item is not None:
                    on_item(item, out)
                if len(out) >= n:
                    return

    await asyncio.wait_for(run(), timeout)
    return out


def seqs(items: list[Item]) -> list[object]:
    return [i.sequence if isinstance(i, Segment) else ("gap", i.from_sequence, i.to_sequence)
            for i in items]


def orcasound(server: LiveHlsServer, client: HttpClient, **kw: object) -> OrcasoundSource:
    kw.setdefault("poll_interval_s", POLL)
    kw.setdefault("finish_s", 0.05)
    return OrcasoundSource(server.base_url, NODE, client, **kw)  # type: ignore[arg-type]


# --- OrcasoundSource on the live origin ---------------------------------------------

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


# --- HlsSource on the live origin ---------------------------------------------------

def test_sliding_window_with_discontinuity_gap_and_endlist(
        hls_server: LiveHlsServer, http_client: HttpClient) -> None:
    pdt = datetime(2024, 5, 1, 12, tzinfo=UTC)
    stream = hls_server.add_stream(window=3, media_sequence=100, program_date_time=pdt,
                                   target_duration=6)
    stream.publish(b"s100", 6.0)
    stream.publish(b"s101", 6.0)

    def advance(item: Item, out: list[Item]) -> None:
        if len(out) == 1:  # 5 more at once: 102 and 103 leave the 3-wide window unseen
            for i in range(102, 107):
                stream.publish(f"s{i}".encode(), 6.0, discontinuity=i == 106)
            stream.finish()

    source = HlsSource(hls_server.url(stream.path), http_client, poll_interval_s=POLL,
                       start_segments_back=1)
    items = asyncio.run(take(source, 99, on_item=advance))  # ends by itself at ENDLIST
    assert seqs(items) == [101, ("gap", 102, 103), 104, 105, 106]
    gap = items[1]
    assert isinstance(gap, Gap) and "fell out" in gap.reason
    assert gap.duration_s == pytest.approx(12.0)  # re-anchored on program date-time
    assert gap.utc_start == pdt + timedelta(seconds=12)
    segs = [i for i in items if isinstance(i, Segment)]
    assert [s.discontinuity for s in segs] == [True, True, False, True]
    assert [s.utc_start for s in segs] == [pdt + timedelta(seconds=6 * k)
                                           for k in (1, 4, 5, 6)]
    assert [s.offset_s for s in segs] == [6.0, 24.0, 30.0, 36.0]  # from the first listed
    assert source.live_edge_utc == pdt + timedelta(seconds=42)


def test_hls_resume_no_longer_listed_yields_gap(hls_server: LiveHlsServer,
                                               http_client: HttpClient) -> None:
    stream = hls_server.add_stream(window=4, media_sequence=10)
    for i in range(8):
        stream.publish(b"x%d" % i, 4.0)  # lists 14..17
    url = hls_server.url(stream.path)
    source = HlsSource(url, http_client, poll_interval_s=POLL, start_segments_back=2)
    items = asyncio.run(take(source, 3, Position(url, 11)))
    assert seqs(items) == [("gap", 12, 15), 16, 17]
    gap = items[0]
    assert isinstance(gap, Gap) and "no longer listed" in gap.reason
    assert gap.duration_s == pytest.approx(16.0)  # 2 listed + 2 unlisted x mean EXTINF


def test_hls_resume_listed_continues(hls_server: LiveHlsServer,
                                     http_client: HttpClient) -> None:
    stream = hls_server.add_stream(window=4, media_sequence=10)
    for i in range(8):
        stream.publish(b"x%d" % i, 4.0)
    url = hls_server.url(stream.path)
    source = HlsSource(url, http_client, poll_interval_s=POLL, start_segments_back=1)
    items = asyncio.run(take(source, 2, Position(url, 15)))
    assert seqs(items) == [16, 17]
    assert all(isinstance(i, Segment) and not i.discontinuity for i in items)


def test_master_playlist_follows_the_audio_rendition(
        hls_server: LiveHlsServer, http_client: HttpClient) -> None:
    stream = hls_server.add_stream("/hydro/audio/index.m3u8", window=3)
    stream.publish(b"a0", 10.0)
    stream.finish()
    master = hls_server.put("/hydro/master.m3u8", (
        '#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="h",DEFAULT=YES,'
        'URI="audio/index.m3u8"\n#EXT-X-STREAM-INF:BANDWIDTH=900000,AUDIO="a"\nvideo.m3u8\n'))
    source = HlsSource(master, http_client, poll_interval_s=POLL)
    (seg,) = asyncio.run(take(source, 5))
    assert isinstance(seg, Segment) and seg.stream_key == master
    assert seg.url == stream.url_of(0) and source.media_url == hls_server.url(stream.path)
    assert seg.utc_start is None  # a finished playlist without PDT has no clock


# --- faults the sources must absorb (issue 14) ---------------------------------------

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
