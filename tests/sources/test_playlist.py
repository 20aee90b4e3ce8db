"""Playlist parsing, audio rendition choice, latest.txt and sequence tracking (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from listener.errors import PlaylistError
from listener.sources.orcasound import parse_latest_txt
from listener.sources.playlist import (
    MasterPlaylist,
    MediaPlaylistParser,
    parse_media_playlist,
    parse_playlist,
    select_audio_rendition,
)
from listener.sources.segments import Gap, Segment, StreamTracker

ORCASOUND_TEXT = """#EXTM3U
#EXT-X-VERSION:3
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-ALLOW-CACHE:YES
#EXT-X-TARGETDURATION:11
#EXTINF:10.005333,
live000.ts
#EXTINF:9.984000,
live001.ts
#EXTINF:10.005333,
live002.ts
"""
TS_A = 1_700_000_000


# --- parsing -----------------------------------------------------------------------

def test_parse_orcasound_form_gives_absolute_urls_and_durations() -> None:
    url = "https://bucket.example/rpi/hls/1700000000/live.m3u8"
    pl = parse_media_playlist(ORCASOUND_TEXT, url)
    assert (pl.media_sequence, pl.target_duration_s, pl.endlist) == (0, 11.0, False)
    assert [e.sequence for e in pl.entries] == [0, 1, 2] and pl.last_sequence == 2
    assert pl.entries[1].url == "https://bucket.example/rpi/hls/1700000000/live001.ts"
    assert [e.duration_s for e in pl.entries] == [10.005333, 9.984, 10.005333]
    assert not any(e.discontinuity or e.program_date_time for e in pl.entries)


def test_parse_program_date_time_discontinuity_and_endlist() -> None:
    text = ("\ufeff#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:41\n#EXT-X-TARGETDURATION:6\n"
            "#EXT-X-PROGRAM-DATE-TIME:2024-05-01T12:00:00.500Z\n#EXTINF:6.0,\na.ts\n"
            "#EXTINF:6.0,\nb.ts\n#EXT-X-DISCONTINUITY\n"
            "#EXT-X-PROGRAM-DATE-TIME:2024-05-01T13:00:00\n#EXTINF:4.0,\nc.ts\n#EXT-X-ENDLIST\n")
    pl = parse_media_playlist(text.encode(), "http://h/x/index.m3u8")
    t0 = datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=UTC)
    assert [e.program_date_time for e in pl.entries] == [
        t0, t0 + timedelta(seconds=6), datetime(2024, 5, 1, 13, tzinfo=UTC)]  # naive = UTC
    assert [e.discontinuity for e in pl.entries] == [False, False, True]
    assert pl.endlist and pl.entry(43) is not None and pl.entry(44) is None


@pytest.mark.parametrize("text, match", [
    ("<html>nope</html>", "no #EXTM3U"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    ("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:x\n", "malformed"),
    ("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:-4\n#EXTINF:10,\nx.ts\n", "malformed"),
])
def test_garbage_playlists_raise_playlist_error_naming_url(text: str | bytes,
                                                           match: str) -> None:
    with pytest.raises(PlaylistError, match=match) as info:
        parse_media_playlist(text, "http://h/bad.m3u8")
    assert "http://h/bad.m3u8" in str(info.value)


@pytest.mark.parametrize("bad, why", [
    ("#EXTINF:-5,\nlive001.ts", "bad EXTINF duration '-5'"),
    ("#EXTINF:abc,\nlive001.ts", "bad EXTINF duration 'abc'"),
    ("#EXTINF:nan,\nlive001.ts", "bad EXTINF duration 'nan'"),
    ("#EXTINF:1e9,\nlive001.ts", "bad EXTINF duration '1e9'"),
    ("live001.ts", "URI line without #EXTINF"),
    ("#EXTINF:10,\nfile:///etc/passwd", "non-http(s)"),
])
def test_a_bad_entry_keeps_its_sequence_and_the_rest_is_followed(bad: str, why: str) -> None:
    text = ("#EXTM3U\n#EXT-X-TARGETDURATION:11\n#EXTINF:10.0,\nlive000.ts\n" + bad
            + "\n#EXTINF:10.0,\nlive002.ts\n#EXTINF:9.0,\nlive003.ts\n")
    pl = parse_media_playlist(text, "http://h/n/hls/1/live.m3u8")
    assert [e.sequence for e in pl.entries] == [0, 1, 2, 3]
    assert [e.error is None for e in pl.entries] == [True, False, True, True]
    assert why in (pl.entries[1].error or "")
    assert pl.entries[2].url == "http://h/n/hls/1/live002.ts"
    # The bad entry is booked at the mean listed EXTINF, so later offsets stay right.
    tracker = StreamTracker("n/hls/1", datetime.fromtimestamp(TS_A, UTC))
    tracker.start(pl, None, back=4)
    items = tracker.advance(pl)
    assert _seqs(items) == [0, ("gap", 1, 1), 2, 3]
    gap, after = items[1], items[2]
    assert isinstance(gap, Gap) and why in gap.reason and gap.duration_s == 10.0
    assert gap.utc_start == datetime.fromtimestamp(TS_A + 10, UTC)
    assert isinstance(after, Segment) and after.discontinuity and after.offset_s == 20.0


def test_a_segment_listed_twice_books_no_time_where_names_are_unique() -> None:
    text = ORCASOUND_TEXT.replace("live001.ts\n", "live001.ts\n#EXTINF:9.984000,\nlive001.ts\n")
    url = "http://h/n/hls/1/live.m3u8"
    parser = MediaPlaylistParser(url, unique_uris=True)
    # Committed line by line, and with the repeat in an unterminated last line.
    for copy in (text, text.rstrip("\n")):
        pl = MediaPlaylistParser(url, unique_uris=True).parse(copy)
        assert [e.error is None for e in pl.entries][:3] == [True, True, False]
    pl = parser.parse(text)
    assert "listed again (first at sequence 1)" in (pl.entries[2].error or "")
    assert pl.entries[2].duration_s == 0.0
    tracker = StreamTracker("n/hls/1", datetime.fromtimestamp(TS_A, UTC))
    tracker.start(pl, None, back=4)
    items = tracker.advance(pl)
    assert _seqs(items) == [0, 1, ("gap", 2, 2), 3]
    gap, last = items[2], items[3]
    # live002's offset is that of its audio: nothing booked for the repeat.
    assert isinstance(gap, Gap) and gap.duration_s is None
    assert isinstance(last, Segment) and last.offset_s == pytest.approx(10.005333 + 9.984)
    # A generic HLS server may repeat a filler segment: that is audio, booked.
    generic = parse_media_playlist(text, url)
    assert all(e.error is None for e in generic.entries)


def test_incremental_parse_reads_only_what_was_appended() -> None:
    parser = MediaPlaylistParser("http://h/n/hls/1/live.m3u8")
    text = "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n"
    for k in range(3):
        text += f"#EXTINF:10.0,\nlive{k:03d}.ts\n"
    assert parser.parse(text).last_sequence == 2
    # An unterminated last line is parsed but not committed.
    grown = text + "#EXTINF:4.0,\nlive003.ts"
    assert [e.duration_s for e in parser.parse(grown).entries][-1] == 4.0
    full = grown + "\n#EXTINF:10.0,\nlive004.ts\n#EXT-X-ENDLIST\n"
    pl = parser.parse(full)
    assert pl.endlist and [e.sequence for e in pl.entries] == [0, 1, 2, 3, 4]
    assert pl == parse_media_playlist(full, "http://h/n/hls/1/live.m3u8")
    # A copy that is not a continuation (rewritten, shorter) is parsed afresh.
    assert parser.parse(text).last_sequence == 2 and not parser.parse(text).endlist


def test_a_100000_entry_playlist_parses_fast_and_new_lines_faster() -> None:
    lines = ["#EXTM3U", "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-TARGETDURATION:11"]
    for k in range(100_000):
        lines += ["#EXTINF:10.005333,", f"live{k:05d}.ts"]
    text = ("\n".join(lines) + "\n").encode()
    parser = MediaPlaylistParser("http://h/n/hls/1/live.m3u8")
    assert parser.parse(text).last_sequence == 99_999
    tracker = StreamTracker("n/hls/1", None, restarts=False)
    tracker.start(parser.parse(text), None, back=1)
    assert len(tracker.advance(parser.parse(text))) == 1
    grown = text + b"#EXTINF:10.0,\nlive100000.ts\n"
    # Counting work, not time: the appended copy parses only its new lines.
    calls = 0
    feed = parser._feed

    def counting(chunk: bytes, *args: object) -> None:
        nonlocal calls
        calls += chunk.count(b"\n")
        feed(chunk, *args)  # type: ignore[arg-type]

    parser._feed = counting  # type: ignore[method-assign, assignment]
    items = tracker.advance(parser.parse(grown))
    assert _seqs(items) == [100_000] and calls == 2


MASTER = """#EXTM3U
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="en",AUTOSELECT=YES,URI="audio/en.m3u8"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="hydro",DEFAULT=YES,URI="audio/hydro.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=2000000,CODECS="avc1.4d401f,mp4a.40.2",AUDIO="a"
video.m3u8
"""


def test_select_audio_rendition_rule() -> None:
    base = "http://h/m/master.m3u8"
    master = parse_playlist(MASTER, base)
    assert isinstance(master, MasterPlaylist)
    assert select_audio_rendition(master) == "http://h/m/audio/hydro.m3u8"  # DEFAULT=YES
    variants = ('#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=900000,CODECS="avc1.4d401f,mp4a.40.2"\n'
                'v.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=64000,CODECS="mp4a.40.2"\nlo.m3u8\n'
                '#EXT-X-STREAM-INF:BANDWIDTH=128000,CODECS="mp4a.40.2"\nhi.m3u8\n')
    master = parse_playlist(variants, base)
    assert isinstance(master, MasterPlaylist)
    assert select_audio_rendition(master) == "http://h/m/hi.m3u8"  # best audio-only
    muxed = ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=900000\nbig.m3u8\n"
             "#EXT-X-STREAM-INF:BANDWIDTH=300000\nsmall.m3u8\n")
    master = parse_playlist(muxed, base)
    assert isinstance(master, MasterPlaylist)
    assert select_audio_rendition(master) == "http://h/m/small.m3u8"  # fewest bytes
    with pytest.raises(PlaylistError, match="master playlist"):
        parse_media_playlist(MASTER, base)


def test_latest_txt_validation() -> None:
    assert parse_latest_txt(b"1594150218\n", "u") == 1594150218
    for bad in (b"", b"hello\n", b"-5\n", b"12\n", b"99999999999\n", b"1594150218.5\n"):
        with pytest.raises(PlaylistError, match="u: "):
            parse_latest_txt(bad, "u")


# --- sequence tracking (pure) ------------------------------------------------------

def test_offsets_accumulate_from_extinf_and_utc_is_folder_time_plus_offset() -> None:
    start = datetime.fromtimestamp(TS_A, UTC)
    tracker = StreamTracker("n/hls/1", start)
    pl = parse_media_playlist(ORCASOUND_TEXT, "http://h/n/hls/1/live.m3u8")
    assert tracker.start(pl, None, back=2) is None
    items = tracker.advance(pl)
    assert [(s.sequence, s.offset_s) for s in items if isinstance(s, Segment)] == \
        [(1, 10.005333), (2, 10.005333 + 9.984)]
    seg = items[1]
    assert isinstance(seg, Segment)
    assert seg.utc_start == start + timedelta(seconds=10.005333 + 9.984)
    assert tracker.live_edge_offset_s(pl) == pytest.approx(10.005333 * 2 + 9.984)


def _window(first: int, count: int, duration: float = 4.0, pdt: datetime | None = None,
            target: int = 10) -> str:
    lines = ["#EXTM3U", f"#EXT-X-TARGETDURATION:{target}", f"#EXT-X-MEDIA-SEQUENCE:{first}"]
    for k in range(count):
        if pdt is not None:
            when = pdt + timedelta(seconds=duration * (first + k))
            lines.append("#EXT-X-PROGRAM-DATE-TIME:" + when.isoformat())
        lines += [f"#EXTINF:{duration},", f"s{first + k}.ts"]
    return "\n".join(lines) + "\n"


def _seqs(items: list[Segment | Gap]) -> list[object]:
    return [i.sequence if isinstance(i, Segment) else ("gap", i.from_sequence, i.to_sequence)
            for i in items]


def test_tracker_resume_just_before_the_window_is_seamless() -> None:
    tracker = StreamTracker("k")
    pl = parse_media_playlist(_window(10, 3), "http://h/p.m3u8")
    assert tracker.start(pl, 9, back=1) is None  # 9 fell out, but 10 is the next one
    items = tracker.advance(pl)
    assert _seqs(items) == [10, 11, 12]
    assert not any(isinstance(i, Segment) and i.discontinuity for i in items)


def test_tracker_never_starts_before_a_resume_point_too_far_behind() -> None:
    # 8 s of backlog is over the 5 s limit, but the live-edge start (3 back)
    # would be sequence 12, before the resume point 13: start after it.
    tracker = StreamTracker("k")
    pl = parse_media_playlist(_window(10, 6), "http://h/p.m3u8")  # 10..15, 4 s each
    assert tracker.start(pl, 13, back=3, max_backlog_s=5.0) is None
    assert _seqs(tracker.advance(pl)) == [14, 15]


def test_tracker_gap_without_pdt_is_estimated_from_mean_extinf() -> None:
    tracker = StreamTracker("k")
    tracker.start(parse_media_playlist(_window(0, 2), "http://h/p.m3u8"), None, back=2)
    tracker.advance(parse_media_playlist(_window(0, 2), "http://h/p.m3u8"))
    items = tracker.advance(parse_media_playlist(_window(5, 2), "http://h/p.m3u8"))
    assert _seqs(items) == [("gap", 2, 4), 5, 6]
    gap, first = items[0], items[1]
    assert isinstance(gap, Gap) and gap.duration_s == pytest.approx(12.0)
    assert isinstance(first, Segment) and first.discontinuity
    assert first.offset_s == pytest.approx(8.0 + 12.0)  # offsets keep accumulating


def test_tracker_ignores_a_stale_copy_but_follows_a_restart() -> None:
    tracker = StreamTracker("k")
    url = "http://h/p.m3u8"
    tracker.start(parse_media_playlist(_window(100, 3), url), None, back=3)
    assert _seqs(tracker.advance(parse_media_playlist(_window(100, 3), url))) == [100, 101, 102]
    stale = parse_media_playlist(_window(98, 3), url)  # an older cached copy
    assert tracker.advance(stale) == [] and tracker.advance(stale) == []
    assert _seqs(tracker.advance(parse_media_playlist(_window(101, 3), url))) == [103]
    restarted = parse_media_playlist(_window(0, 2), url)  # the encoder started over
    assert tracker.advance(restarted) == [] and tracker.advance(restarted) == []
    items = tracker.advance(restarted)  # the third poll in a row: believe it
    assert _seqs(items) == [0, 1]
    first = items[0]
    assert isinstance(first, Segment) and first.discontinuity and first.offset_s == 16.0


def test_orcasound_tracker_waits_out_a_shorter_playlist_instead_of_restarting() -> None:
    url = "http://h/n/hls/1/live.m3u8"
    tracker = StreamTracker("n/hls/1", datetime.fromtimestamp(TS_A, UTC), restarts=False)
    tracker.start(parse_media_playlist(_window(0, 6), url), None, back=6)
    assert _seqs(tracker.advance(parse_media_playlist(_window(0, 6), url))) == [0, 1, 2, 3, 4, 5]
    short = parse_media_playlist(_window(0, 2), url)
    for _ in range(5):
        assert tracker.advance(short) == []
    items = tracker.advance(parse_media_playlist(_window(0, 7), url))
    assert _seqs(items) == [6]
    seg = items[0]
    assert isinstance(seg, Segment) and seg.offset_s == 24.0 and not seg.discontinuity


def test_a_byte_order_mark_is_tolerated_in_latest_txt_and_playlists() -> None:
    bom = b"\xef\xbb\xbf"
    url = "http://x/rpi/latest.txt"
    assert parse_latest_txt(bom + b"1796324400\r\n", url, now=1796324400) == 1796324400
    with pytest.raises(PlaylistError, match="expected unix seconds"):
        parse_latest_txt(bom + bom + b"1796324400", url, now=1796324400)
    text = bom + b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:10.0,\nlive007.ts\n"
    playlist = "http://x/hls/1/live.m3u8"
    for media in (parse_media_playlist(text, playlist), MediaPlaylistParser(playlist).parse(text)):
        assert [(e.sequence, e.url, e.error) for e in media.entries] == \
            [(7, "http://x/hls/1/live007.ts", None)]


def test_tracker_restart_takes_the_clock_again_where_it_is_an_estimate() -> None:
    start = datetime(2024, 5, 1, 12, tzinfo=UTC)
    tracker = StreamTracker("k", start)
    url = "http://h/p.m3u8"
    tracker.start(parse_media_playlist(_window(100, 3), url), None, back=3)
    tracker.advance(parse_media_playlist(_window(100, 3), url))  # 12 s of audio
    now = start + timedelta(hours=1)  # after an outage of unknown length
    restarted = parse_media_playlist(_window(0, 2), url)
    for _ in range(3):
        items = tracker.advance(restarted, now)
    last = items[-1]
    assert _seqs(items) == [0, 1] and isinstance(last, Segment)
    assert last.utc_end == now  # the start-up rule: the newest listed ends now
    assert last.offset_s == 16.0  # offsets still count the audio received


def test_a_program_date_time_the_timeline_cannot_carry_is_ignored() -> None:
    # Year 9999 overflowed when the segment's duration was added (an OverflowError
    # escaped the parser); a clock outside 1970-2999 is an encoder's broken clock.
    for when in ("9999-12-31T23:59:59Z", "1900-01-01T00:00:00Z"):
        text = f"#EXTM3U\n#EXT-X-PROGRAM-DATE-TIME:{when}\n#EXTINF:10,\na.ts\n#EXTINF:10,\nb.ts\n"
        playlist = parse_playlist(text.encode(), "http://h/live.m3u8")
        assert [e.program_date_time for e in playlist.entries] == [None, None], when
    text = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=INFINITY\nv.m3u8\n"
    with pytest.raises(PlaylistError, match="malformed playlist"):
        parse_playlist(text.encode(), "http://h/master.m3u8")
