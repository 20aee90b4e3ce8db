"""Segments reconciled with their EXTINF before decoding, on real Orcasound MPEG-TS."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from listener.audio.decode import find_ffmpeg
from listener.audio.probe import count_adts_frames, probe_segment
from listener.audio.reconcile import TOLERANCE_S, SegmentReconciler
from listener.sources.segments import Segment

REAL = Path(__file__).resolve().parents[1] / "data" / "hls" / "rpi_orcasound_lab" / "1594150218"
KEY = "rpi_orcasound_lab/hls/1594150218"


def seg(seq: int, duration_s: float, offset_s: float) -> Segment:
    return Segment(KEY, seq, f"http://127.0.0.1/{KEY}/live{seq:03d}.ts", duration_s,
                   datetime.fromtimestamp(1594150218, UTC), offset_s)


@pytest.fixture(scope="module")
def real() -> list[bytes]:
    return [(REAL / f"live{i:03d}.ts").read_bytes() for i in range(3)]


def test_real_segments_hold_exactly_their_frames(real: list[bytes]) -> None:
    probes = [probe_segment(b) for b in real]
    assert [p.codec for p in probes] == ["aac"] * 3
    assert [p.frames for p in probes] == [459, 469, 469]
    # 1,430,528 samples: what ffmpeg decodes from the three (tests/audio/test_decode.py)
    assert sum(p.frames for p in probes) * 1024 == 1_430_528
    assert probes[1].first_pts is not None and probes[2].first_pts is not None
    # PES timestamps (90 kHz) follow the audio to within a millisecond
    assert probes[2].first_pts - probes[1].first_pts == pytest.approx(469 * 1024 * 90 / 48,
                                                                      abs=90)


def test_well_formed_segments_pass(real: list[bytes]) -> None:
    r = SegmentReconciler()
    offset = 0.0
    for i, body in enumerate(real):
        duration = probe_segment(body).duration_s
        assert duration is not None
        v = r.check(seg(i, round(duration, 6), offset), body)
        assert v.feed and not v.end_after and v.problem is None and v.restart is None
        offset += duration


@pytest.mark.parametrize("body", [b"", b"<html><body>503 Service Unavailable</body></html>",
                                  bytes(range(256)) * 800], ids=["empty", "html", "random"])
def test_a_body_without_audio_is_lost_not_fed(body: bytes) -> None:
    v = SegmentReconciler().check(seg(5, 10.0, 50.0), body)
    assert not v.feed and v.end_after
    assert v.reason == "undecodable" and v.dropped_s == 10.0
    assert v.problem is not None and "10.000 s are lost" in v.problem


def test_a_truncated_body_is_fed_and_the_rest_reported(real: list[bytes]) -> None:
    half = real[1][:len(real[1]) // 2]
    v = SegmentReconciler().check(seg(1, 10.005333, 9.792), half)
    assert v.feed and v.end_after and v.reason == "short_segment"
    expected = 10.005333 - probe_segment(half).frames * 1024 / 48000
    assert v.dropped_s == pytest.approx(expected) and v.dropped_s > 4.5


def test_audio_past_the_listed_end_is_cut(real: list[bytes]) -> None:
    v = SegmentReconciler().check(seg(1, 0.0, 9.792), real[1])  # #EXTINF:0
    assert v.feed and v.end_after and v.reason == "excess_audio"
    assert v.limit_s == pytest.approx(9.792)
    assert v.dropped_s == pytest.approx(10.005333, abs=1e-5)


def test_small_rounding_of_extinf_is_tolerated(real: list[bytes]) -> None:
    v = SegmentReconciler().check(seg(1, 10.0, 9.792), real[1])  # EXTINF written as 10
    assert v.feed and not v.end_after
    assert abs(10.0 - 10.005333) < TOLERANCE_S


def test_a_segment_listed_twice_is_fed_once(real: list[bytes]) -> None:
    r = SegmentReconciler()
    assert r.check(seg(1, 10.005333, 9.792), real[1]).feed
    again = r.check(seg(2, 10.005333, 19.797), real[1])
    assert not again.feed and again.reason == "duplicate"


def test_a_codec_change_restarts_the_decoder(tmp_path: Path, real: list[bytes]) -> None:
    out = tmp_path / "mp2.ts"
    subprocess.run([find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=2:sample_rate=48000", "-c:a", "mp2",
                    "-f", "mpegts", str(out)], check=True, timeout=60)
    r = SegmentReconciler()
    assert r.check(seg(1, 10.005333, 9.792), real[1]).restart is None
    v = r.check(seg(2, 2.0, 19.797), out.read_bytes())
    assert v.feed and v.restart == "codec_change" and probe_segment(out.read_bytes()).codec == "mp3"
    assert r.check(seg(3, 10.005333, 21.797), real[2]).restart == "codec_change"


def test_adts_counting_skips_junk_and_ignores_a_cut_frame() -> None:
    frame = bytes([0xFF, 0xF1, 0x4C, 0x80, 0x02, 0x1F, 0xFC]) + bytes(9)  # 16-byte frame, 48k
    assert count_adts_frames(frame * 3) == (3, 48000)
    assert count_adts_frames(b"junk" + frame + b"xx" + frame) == (2, 48000)
    assert count_adts_frames(frame + frame[:10]) == (1, 48000)
