"""Fuzzing the stream parsers: media playlists, master playlists and ``latest.txt``."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from listener.errors import ListenerError
from listener.sources.orcasound import parse_latest_txt
from listener.sources.playlist import MediaPlaylistParser, parse_playlist

FUZZ = settings(settings.get_profile("listener-fuzz"), max_examples=400)
URL = "http://node.test/rpi/hls/1700000000/live.m3u8"

# Lines a playlist is made of, good and bad, so generated input gets past the header.
_TAGS = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:10", "#EXT-X-ENDLIST",
         "#EXT-X-MEDIA-SEQUENCE:", "#EXTINF:", "#EXT-X-DISCONTINUITY",
         "#EXT-X-PROGRAM-DATE-TIME:", "#EXT-X-STREAM-INF:BANDWIDTH=", "#EXT-X-MEDIA:TYPE=AUDIO,",
         "#EXT-X-KEY:METHOD=AES-128,URI=", "live001.ts", "http://other.test/a.ts",
         "file:///etc/passwd", "../../x.ts", "\ufeff", ""]
_line = st.one_of(st.sampled_from(_TAGS),
                  st.builds(lambda t, s: t + s, st.sampled_from(_TAGS), st.text(max_size=30)),
                  st.text(max_size=40))
_playlist_text = st.builds(lambda lines, end: "\n".join(["#EXTM3U", *lines]) + end,
                           st.lists(_line, max_size=25), st.sampled_from(["", "\n", "\r\n"]))
_playlist = st.one_of(_playlist_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
                      st.binary(max_size=300),
                      st.builds(lambda a, b: a + b, _playlist_text.map(str.encode),
                                st.binary(max_size=40)))


@FUZZ
@given(first=_playlist, second=_playlist)
@example(first=b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:1e9\n", second=b"")
@example(first=b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:\xc2\xb9", second=b"")  # a superscript one
@example(first=b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:" + b"9" * 5000, second=b"")
@example(first=b"#EXTM3U\n#EXTINF:nan,\nx.ts\n#EXTINF:1e400,\ny.ts\n", second=b"\xff")
@example(first=b"#EXTM3U\n#EXTINF:1,\nhttp://[::1/a.ts\n", second=b"")
def test_media_playlist_parser_gives_a_playlist_or_a_playlist_error(first: bytes,
                                                                      second: bytes) -> None:
    parser = MediaPlaylistParser(URL, unique_uris=True)
    for data in (first, first + second, second):  # the live case: it grows, or is replaced
        try:
            playlist = parser.parse(data)
        except ListenerError as err:
            assert str(err)
            continue
        sequences = [e.sequence for e in playlist.entries]
        assert sequences == sorted(sequences)
        assert all(e.url.startswith(("http://", "https://")) or e.error for e in playlist.entries)


@FUZZ
@given(data=_playlist)
@example(data=b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=x\n\n")
@example(data=b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:\xc2\xb9")  # found by this test in CI
@example(data=b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=INFINITY")  # found by it too: int(inf)
@example(data=b"#EXTM3U\n#EXT-X-PROGRAM-DATE-TIME:9999-12-31T23:59:59Z\n#EXTINF:10,\na.ts\n")
@example(data=b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"mp4a\"\nhttp://[::1/a.m3u8\n")
def test_any_playlist_parses_or_is_a_playlist_error(data: bytes) -> None:
    try:
        parse_playlist(data, URL)
    except ListenerError as err:
        assert str(err)


@FUZZ
@given(data=st.one_of(st.binary(max_size=70),
                      st.builds(lambda bom, n, tail: bom + str(n).encode() + tail,
                                st.sampled_from([b"", b"\xef\xbb\xbf", b" ", b"\xef\xbb"]),
                                st.integers(-10, 10**13),
                                st.sampled_from([b"", b"\n", b"\r\n", b"\x00", b"\xff"])),
                      st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass"))))
@example(data="\u0661\u0667\u0669\u0666".encode())  # Arabic-Indic digits: not unix seconds
def test_latest_txt_is_unix_seconds_or_a_playlist_error(data: bytes) -> None:
    try:
        ts = parse_latest_txt(data, "http://node.test/rpi/latest.txt", now=1_800_000_000)
    except ListenerError as err:
        assert "latest.txt" in str(err)
        return
    assert 1_400_000_000 <= ts <= 1_800_086_400
