"""HlsSource on a live loopback origin: sliding window, resuming, master playlists."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from support.hls_reading import POLL, Item, seqs, take
from support.hls_server import LiveHlsServer

from listener.sources.hls import Gap, HlsSource, Position, Segment
from listener.sources.http_client import HttpClient


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
