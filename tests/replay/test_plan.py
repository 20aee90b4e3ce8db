"""Replay planning against a loopback S3 bucket: listing, selection, playlists, gaps."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.bucket_server import BucketServer

from listener.config import FetchConfig
from listener.errors import FetchError, ListenerError
from listener.replay.plan import (
    ArchiveGap,
    bucket_location,
    list_folders,
    plan_range,
    plan_segments,
    select_folders,
)
from listener.sources.http_client import HttpClient
from listener.sources.playlist import parse_media_playlist
from listener.sources.segments import Segment, StreamTracker

NODE = "rpi_orcasound_lab"
F1 = 1_600_000_000  # 2020-09-13T12:26:40Z
F2, F3, F4 = F1 + 100, F1 + 200, F1 + 300
# ffmpeg's real EXTINFs: a short first segment, then 469 AAC frames each.
F1_DURATIONS = [9.792] + [10.005333] * 5
F1_OFFSETS = [sum(F1_DURATIONS[:i]) for i in range(6)]
REAL_TS = Path(__file__).parents[1] / "data" / "hls" / NODE / "1594150218"


def at(ts: float) -> datetime:
    """Unix seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ts, UTC)


def seg(n: int, duration: float = 10.0) -> tuple[str, float, bytes]:
    return f"live{n:03d}.ts", duration, f"segment {n}".encode()


@pytest.fixture
def bucket() -> Iterator[BucketServer]:
    """Four streams of one node (page size 2, so listing takes 3 pages).

    F1: six segments; F2: playlist skips live003, live001 is listed but 404;
    F3: segments but no playlist; F4: six 10 s segments. Also a non-numeric
    folder and another node, which must not show up.
    """
    with BucketServer(page_size=2) as server:
        server.add_folder(NODE, F1, [seg(i, d) for i, d in enumerate(F1_DURATIONS)])
        server.add_folder(NODE, F2, [seg(i) for i in (0, 1, 2, 4, 5)], missing={"live001.ts"})
        server.add_folder(NODE, F3, [seg(i) for i in range(6)], playlist=False)
        server.add_folder(NODE, F4, [seg(i) for i in range(6)])
        server.put(f"{NODE}/hls/notes/readme.txt", b"not a stream")
        server.add_folder("other_node", F1 + 50, [seg(0)])
        yield server


@pytest.fixture
def client() -> Iterator[HttpClient]:
    with HttpClient(FetchConfig(retries=1, backoff_initial_s=0.01, backoff_max_s=0.02)) as c:
        yield c


def listings(server: BucketServer) -> list[str]:
    return [r for r in server.requests if "list-type=2" in r]


def test_list_folders_follows_pagination(bucket: BucketServer, client: HttpClient,
                                         caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="listener.replay.bucket"):
        assert list_folders(client, bucket.base_url, NODE) == [F1, F2, F3, F4]
    pages = listings(bucket)
    assert len(pages) == 3  # 5 prefixes, 2 per page
    assert "continuation-token" not in pages[0]
    assert all("continuation-token=" in p for p in pages[1:])
    assert pages[0].startswith(f"/{bucket.bucket}?") and "delimiter=%2F" in pages[0]
    assert "notes" in caplog.text  # skipped, and said so


def test_list_folders_retries_a_transient_failure(bucket: BucketServer,
                                                  client: HttpClient) -> None:
    bucket.failures[""] = [503]
    assert list_folders(client, bucket.base_url, NODE) == [F1, F2, F3, F4]


def test_bucket_url_forms() -> None:
    path_style = bucket_location("https://s3-us-west-2.amazonaws.com/audio-orcasound-net/")
    assert path_style.bucket == "audio-orcasound-net"
    assert path_style.list_url == "https://s3-us-west-2.amazonaws.com/audio-orcasound-net"
    assert path_style.key_prefix == ""
    vhost = bucket_location("https://audio-orcasound-net.s3.amazonaws.com")
    assert (vhost.bucket, vhost.list_url, vhost.key_prefix) == (
        "audio-orcasound-net", "https://audio-orcasound-net.s3.amazonaws.com/", "")
    regional = bucket_location("https://dev-streaming-orcasound-net.s3.us-west-2.amazonaws.com/x")
    assert (regional.bucket, regional.key_prefix) == ("dev-streaming-orcasound-net", "x/")
    assert bucket_location("http://127.0.0.1:9000/b/archive").key_prefix == "archive/"
    with pytest.raises(ListenerError, match="cannot tell the bucket"):
        bucket_location("https://s3-us-west-2.amazonaws.com/")


@pytest.mark.parametrize(("start", "end", "expected"), [
    (150, 250, [100, 200]),   # the folder running at the start, then those inside
    (200, 250, [100, 200]),   # the one before is kept: its audio may run past 200
    (100, 400, [100, 200, 300]),
    (350, 400, [300]),        # after the last folder: it may still be running
    (50, 150, [100]),         # starts before the first folder
    (50, 90, []),             # entirely before the first folder
    (150, 200, [100]),        # the end is exclusive
])
def test_select_folders(start: int, end: int, expected: list[int]) -> None:
    assert select_folders([300, 100, 200, 100], at(start), at(end)) == expected


def test_segments_cut_to_range_with_warmup(bucket: BucketServer, client: HttpClient) -> None:
    plan = plan_segments(client, bucket.base_url, NODE, F1, at(F1 + 25), at(F1 + 35),
                         next_folder=F2)
    assert [s.sequence for s in plan.segments] == [1, 2, 3]
    assert [s.warmup for s in plan.segments] == [True, False, False]
    assert [s.discontinuity for s in plan.segments] == [True, False, False]
    for s in plan.segments:
        assert s.stream_key == f"{NODE}/hls/{F1}"
        assert s.url == f"{bucket.base_url}/{NODE}/hls/{F1}/live{s.sequence:03d}.ts"
        assert s.duration_s == F1_DURATIONS[s.sequence]
        assert s.offset_s == pytest.approx(F1_OFFSETS[s.sequence])
        assert s.stream_start_utc == at(F1)
        assert s.utc_start == at(F1) + timedelta(seconds=F1_OFFSETS[s.sequence])
    assert plan.audio_s == pytest.approx(10.0)
    assert plan.gaps == []
    assert plan.audio_end_utc == at(F1 + sum(F1_DURATIONS))


def test_no_warmup_at_stream_start(bucket: BucketServer, client: HttpClient) -> None:
    plan = plan_segments(client, bucket.base_url, NODE, F1, at(F1), at(F1 + 5), next_folder=F2)
    assert [(s.sequence, s.warmup, s.discontinuity) for s in plan.segments] == [(0, False, True)]
    assert plan.audio_s == pytest.approx(5.0)


def test_same_times_as_the_live_source(bucket: BucketServer, client: HttpClient) -> None:
    """Replay and the live daemon stamp the same audio with the same time."""
    url = f"{bucket.base_url}/{NODE}/hls/{F1}/live.m3u8"
    tracker = StreamTracker(f"{NODE}/hls/{F1}", at(F1))
    playlist = parse_media_playlist(client.get(url, "playlist"), url)
    tracker.start(playlist, resume_sequence=-1, back=0)  # from the first segment
    live = [s for s in tracker.advance(playlist) if isinstance(s, Segment)]
    plan = plan_segments(client, bucket.base_url, NODE, F1, at(F1), at(F1 + 60))

    def stamp(s: Segment) -> tuple[object, ...]:
        return (s.stream_key, s.sequence, s.url, s.duration_s, s.offset_s, s.utc_start)

    assert [stamp(s) for s in plan.segments] == [stamp(s) for s in live]


def test_number_jump_is_a_gap_and_keeps_time(bucket: BucketServer, client: HttpClient) -> None:
    plan = plan_segments(client, bucket.base_url, NODE, F2, at(F2), at(F2 + 100),
                         next_folder=F3)
    assert [s.sequence for s in plan.segments] == [0, 1, 2, 4, 5]
    after = plan.segments[3]
    assert after.discontinuity and after.utc_start == at(F2 + 40)  # live003 played
    jump, tail = plan.gaps
    assert (jump.kind, jump.from_sequence, jump.to_sequence) == ("sequence_jump", 3, 3)
    assert (jump.start_utc, jump.end_utc) == (at(F2 + 30), at(F2 + 40))
    assert "live003.ts" in jump.reason
    assert (tail.kind, tail.start_utc, tail.end_utc) == ("between_folders", at(F2 + 60), at(F3))
    assert plan.audio_s == pytest.approx(50.0)


def test_names_missing_before_the_first_listed_one(client: HttpClient) -> None:
    with BucketServer() as server:
        server.add_folder(NODE, F1, [seg(2), seg(3)])
        plan = plan_segments(client, server.base_url, NODE, F1, at(F1), at(F1 + 40))
    assert [(s.sequence, s.utc_start) for s in plan.segments] == [(2, at(F1 + 20)),
                                                                  (3, at(F1 + 30))]
    assert [(g.kind, g.from_sequence, g.to_sequence, g.duration_s) for g in plan.gaps] == [
        ("sequence_jump", 0, 1, 20.0)]
    assert "live000.ts to live001.ts" in plan.gaps[0].reason


def test_listed_segment_missing_from_bucket_is_planned_and_404s(
        bucket: BucketServer, client: HttpClient) -> None:
    plan = plan_segments(client, bucket.base_url, NODE, F2, at(F2), at(F2 + 30))
    missing = next(s for s in plan.segments if s.sequence == 1)
    with pytest.raises(FetchError) as info:
        client.get(missing.url, "segment")
    assert info.value.status == 404
    assert client.get(plan.segments[0].url, "segment") == b"segment 0"


def test_missing_playlist_makes_the_folder_a_gap(bucket: BucketServer,
                                                 client: HttpClient) -> None:
    plan = plan_segments(client, bucket.base_url, NODE, F3, at(F3 - 10), at(F4 + 10),
                         next_folder=F4)
    assert plan.segments == [] and plan.audio_end_utc is None and plan.audio_s == 0
    assert [(g.kind, g.start_utc, g.end_utc) for g in plan.gaps] == [
        ("missing_playlist", at(F3), at(F4))]
    assert "404" in plan.gaps[0].reason


def test_playlist_server_error_is_not_a_gap(bucket: BucketServer, client: HttpClient) -> None:
    bucket.failures[f"{NODE}/hls/{F1}/live.m3u8"] = [503, 503]
    with pytest.raises(FetchError, match="503"):
        plan_segments(client, bucket.base_url, NODE, F1, at(F1), at(F1 + 10))


def test_range_over_four_folders(bucket: BucketServer, client: HttpClient) -> None:
    start, end = F1 + 50, F4 + 15
    plan = plan_range(client, bucket.base_url, NODE, at(start), at(end))
    assert [p.folder for p in plan.folders] == [F1, F2, F3, F4]
    assert [(s.stream_key[-10:], s.sequence, s.warmup) for s in plan.segments] == [
        (str(F1), 4, True), (str(F1), 5, False),
        *[(str(F2), n, False) for n in (0, 1, 2, 4, 5)],
        (str(F4), 0, False), (str(F4), 1, False)]
    starts = [s.utc_start for s in plan.segments]
    assert starts == sorted(starts)  # type: ignore[type-var]
    assert [(g.kind, g.start_utc, g.end_utc) for g in plan.gaps] == [
        ("between_folders", at(F1 + sum(F1_DURATIONS)), at(F2)),
        ("sequence_jump", at(F2 + 30), at(F2 + 40)),
        ("between_folders", at(F2 + 60), at(F3)),
        ("missing_playlist", at(F3), at(F4)),
    ]
    assert plan.audio_s == pytest.approx(sum(F1_DURATIONS) - 50 + 50 + 15)
    # Every second of the range is either audio or a reported gap.
    assert plan.audio_s + plan.gap_s == pytest.approx(end - start, abs=1e-5)


def test_range_edges_before_first_and_after_last_folder(bucket: BucketServer,
                                                        client: HttpClient) -> None:
    early = plan_range(client, bucket.base_url, NODE, at(F1 - 30), at(F1 + 10))
    assert [(g.kind, g.start_utc, g.end_utc) for g in early.gaps] == [
        ("before_first_folder", at(F1 - 30), at(F1))]
    assert [s.sequence for s in early.segments] == [0, 1]
    assert early.audio_s == pytest.approx(10.0)
    late = plan_range(client, bucket.base_url, NODE, at(F4 + 50), at(F4 + 100))
    assert [(g.kind, g.start_utc, g.end_utc) for g in late.gaps] == [
        ("after_last_segment", at(F4 + 60), at(F4 + 100))]
    assert [(s.sequence, s.warmup) for s in late.segments] == [(4, True), (5, False)]


@pytest.mark.parametrize(("start", "end", "why"), [
    (F1 - 100, F1 - 50, "first stream folder starts at 2020-09-13T12:26:40Z"),
    (F1 + 70, F1 + 90, "ends at"),            # between two streams
    (F3 + 10, F3 + 20, "no usable playlist"),  # inside a folder without playlist
])
def test_no_audio_in_range_is_a_clear_error(bucket: BucketServer, client: HttpClient,
                                            start: int, end: int, why: str) -> None:
    with pytest.raises(ListenerError) as info:
        plan_range(client, bucket.base_url, NODE, at(start), at(end))
    message = str(info.value)
    assert message.startswith(f"no audio in the archive for {NODE} between "
                              f"{at(start).isoformat().replace('+00:00', 'Z')} and ")
    assert why in message


def test_bad_ranges(bucket: BucketServer, client: HttpClient) -> None:
    with pytest.raises(ValueError, match=r"empty time range.*not after the start"):
        plan_range(client, bucket.base_url, NODE, at(F2), at(F2))
    with pytest.raises(ValueError, match="empty time range"):
        plan_range(client, bucket.base_url, NODE, at(F2), at(F1))
    with pytest.raises(ValueError, match="no time zone"):
        plan_range(client, bucket.base_url, NODE, datetime(2020, 9, 13, 12), at(F2))
    assert bucket.requests == []  # refused before any request


def test_unknown_node_names_node_and_bucket(bucket: BucketServer, client: HttpClient) -> None:
    with pytest.raises(ListenerError, match=r"'rpi_nowhere'.*'audio-orcasound-net'"):
        plan_range(client, bucket.base_url, "rpi_nowhere", at(F1), at(F2))
    with pytest.raises(ListenerError, match="folder name like"):
        plan_range(client, bucket.base_url, "../secrets", at(F1), at(F2))


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<CommonPrefixes><Prefix>&lol2;</Prefix></CommonPrefixes></ListBucketResult>"""


@pytest.mark.parametrize(("body", "message"), [
    (BILLION_LAUGHS, "DOCTYPE or ENTITY"),
    (BILLION_LAUGHS.replace(b'"1.0"', b'"1.0" encoding="UTF-16"').decode().encode("utf-16"),
     "not UTF-8"),
    (b"<ListBucketResult><CommonPrefixes>", "not valid XML"),
    (b"<Error><Code>AccessDenied</Code></Error>", "expected an S3 ListBucketResult"),
    (b"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
     "no new continuation token"),
])
def test_unsafe_or_malformed_listing_is_refused(bucket: BucketServer, client: HttpClient,
                                                body: bytes, message: str) -> None:
    bucket.listing_override = body
    with pytest.raises(ListenerError, match=message):
        list_folders(client, bucket.base_url, NODE)


def test_listing_is_size_capped(bucket: BucketServer) -> None:
    bucket.listing_override = b"<ListBucketResult>" + b" " * 4096 + b"</ListBucketResult>"
    with HttpClient(FetchConfig(retries=0, max_playlist_bytes=1024)) as small:
        with pytest.raises(FetchError, match="larger than 1024 bytes"):
            list_folders(small, bucket.base_url, NODE)


def test_real_segments_can_be_registered_by_path(client: HttpClient) -> None:
    with BucketServer() as server:
        names = ["live000.ts", "live001.ts", "live002.ts"]
        server.add_folder(NODE, 1594150218, [(n, d, REAL_TS / n) for n, d in
                                              zip(names, [9.792, 10.005333, 10.005333],
                                                  strict=True)])
        plan = plan_range(client, server.base_url, NODE, at(1594150218), at(1594150248))
        assert [s.sequence for s in plan.segments] == [0, 1, 2]
        assert client.get(plan.segments[1].url, "segment") == (REAL_TS / names[1]).read_bytes()
        assert plan.gaps == [ArchiveGap("after_last_segment", at(1594150218 + 29.802666),
                                        at(1594150248), plan.gaps[0].reason,
                                        f"{NODE}/hls/1594150218")]
