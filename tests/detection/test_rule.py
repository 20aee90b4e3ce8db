"""The decision rule on hand-made score sequences, and the streaming aggregator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from listener.config import DetectionConfig
from listener.detection.rule import (
    ClipAggregator,
    EncounterTracker,
    WindowScore,
    decide,
    decide_clip,
)

CFG = DetectionConfig()


def test_per_second_smoothing_matches_reference_formula() -> None:
    c = [i / 100 for i in range(59)]
    seconds, _, _ = decide(c, CFG)
    assert len(seconds) == 60
    assert seconds[0] == pytest.approx(c[0])
    assert seconds[59] == pytest.approx(c[58])
    for j in range(1, 59):
        assert seconds[j] == pytest.approx((c[j - 1] + c[j]) / 2)


def test_three_positive_seconds_make_a_detection() -> None:
    c = [0.0] * 59
    c[10] = 0.9  # seconds 10 and 11 average 0.45 -> not positive
    _, detected, conf = decide(c, CFG)
    assert not detected and conf == pytest.approx(0.0)
    c[10] = c[11] = 1.0  # s10=.5 (not > .5), s11=1.0, s12=.5 -> one positive
    _, detected, _ = decide(c, CFG)
    assert not detected
    c[10] = c[11] = c[12] = 1.0  # s11, s12 = 1.0; s10, s13 = .5 -> two
    assert not decide(c, CFG)[1]
    c[13] = 1.0  # s11..s13 = 1.0 -> three positives
    _, detected, conf = decide(c, CFG)
    assert detected
    assert conf == pytest.approx(100.0)


def test_confidence_is_mean_of_positive_seconds() -> None:
    c = [0.0] * 59
    c[20:24] = [0.8, 0.8, 0.6, 0.6]  # s21=.8, s22=.7, s23=.6 ; s20=.4, s24=.3
    _, detected, conf = decide(c, CFG)
    assert detected
    assert conf == pytest.approx(100 * (0.8 + 0.7 + 0.6) / 3)


def test_thresholds_are_configurable() -> None:
    cfg = DetectionConfig(local_threshold=0.3, global_threshold=1)
    c = [0.0] * 59
    c[5] = 0.7  # s5 = s6 = .35
    assert decide(c, cfg)[1]
    assert not decide(c, DetectionConfig())[1]


def test_gap_units_are_none_and_not_positive() -> None:
    windows = [WindowScore(i, i + 2, 0.9) for i in range(59) if not 20 <= i <= 30]
    clip = decide_clip(windows, 0.0, 60.0, CFG)
    assert clip.windows_expected == 59 and not clip.complete
    assert clip.seconds[25].score is None and not clip.seconds[25].positive
    assert clip.seconds[20].score == pytest.approx(0.9)  # covered by window 19 only


def test_aggregator_cuts_consecutive_clips_and_drops_straddling_windows() -> None:
    agg = ClipAggregator(CFG)
    t0 = datetime(2020, 7, 7, 19, 30, 18, tzinfo=UTC)
    clips = []
    for i in range(0, 150):
        w = WindowScore(float(i), float(i + 2), 1.0 if 70 <= i < 80 else 0.0,
                        t0 + timedelta(seconds=i))
        clips += agg.add(w)
    clips += agg.flush(151.0)
    assert [(c.start_s, c.end_s) for c in clips] == [(0, 60), (60, 120), (120, 151)]
    assert [len(c.windows) for c in clips] == [59, 59, 30]
    assert [c.detected for c in clips] == [False, True, False]
    assert clips[1].utc_start == t0 + timedelta(seconds=60)
    assert [s.start_s for s in clips[1].positive_seconds] == [float(j) for j in range(11, 20)]


def test_aggregator_origin_and_advance_over_gap() -> None:
    agg = ClipAggregator(CFG, origin_s=0.0)
    out = []
    for i in range(130, 140):
        out += agg.add(WindowScore(float(i), i + 2.0, 0.0))
    assert out == []
    out = agg.advance(400.0)  # the stream jumped past the open clip
    assert len(out) == 1 and out[0].start_s == 120.0 and len(out[0].windows) == 10


def test_a_clip_decided_early_alerts_now_and_its_rest_is_a_clip_of_its_own() -> None:
    # A stream that stalls 40 s into a clip with a call at 5-25 s: the call is
    # decided now; when the stream comes back in that clip, the rest is decided
    # apart, from where the first part ended, never sharing its start.
    t0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    agg = ClipAggregator(CFG)

    def window(i: int) -> WindowScore:
        return WindowScore(float(i), i + 2.0, 1.0 if 5 <= i < 25 else 0.0,
                           t0 + timedelta(seconds=i))

    for i in range(39):  # windows up to [38, 40): all the audio that came
        assert agg.add(window(i)) == []
    early = agg.close_early()
    assert [(c.start_s, c.end_s, len(c.windows), c.detected) for c in early] == \
        [(0.0, 40.0, 39, True)]
    assert early[0].utc_start == t0 and early[0].complete
    assert agg.close_early() == []  # nothing open any more
    rest = []
    for i in range(39, 62):  # the stream is back: [39, 41) straddles the decided part
        rest += agg.add(window(i))
    # [39, 41) scores the rest's first unit, as it would have in the whole clip.
    assert [(c.start_s, c.end_s, len(c.windows)) for c in rest] == [(40.0, 60.0, 20)]
    assert rest[0].windows[0].start_s == 39.0 and rest[0].seconds[0].score is not None
    assert rest[0].utc_start == t0 + timedelta(seconds=40)
    assert [(c.start_s, c.end_s) for c in agg.flush()] == [(60.0, 120.0)]


def test_an_aggregator_resumed_mid_clip_starts_where_the_stream_was_decided() -> None:
    agg = ClipAggregator(CFG, decided_to=40.0)  # a clip decided early before a restart
    out = []
    for i in range(40, 70):
        out += agg.add(WindowScore(float(i), i + 2.0, 0.0))
    assert [(c.start_s, c.end_s) for c in out] == [(40.0, 60.0)]
    on_grid = ClipAggregator(CFG, decided_to=60.0)  # the usual resume: a clip's end
    out = []
    for i in range(60, 130):
        out += on_grid.add(WindowScore(float(i), i + 2.0, 0.0))
    assert [(c.start_s, c.end_s, len(c.windows)) for c in out] == [(60.0, 120.0, 59)]


def test_short_file_window_gives_one_clip() -> None:
    clip = decide_clip([WindowScore(0.0, 1.4, 0.9)], 0.0, 1.4, CFG)
    assert len(clip.seconds) == 2 and clip.windows_expected == 0
    assert all(s.positive for s in clip.seconds)


def _clip(start: float, detected: bool):
    score = 1.0 if detected else 0.0
    return decide_clip([WindowScore(start + i, start + i + 2, score) for i in range(59)],
                       start, start + 60, CFG)


def test_encounters_group_close_detections() -> None:
    tracker = EncounterTracker(gap_s=120.0)
    kinds = []
    pattern = [True, False, True, False, False, False, True]
    for k, det in enumerate(pattern):
        kinds += [(e.kind, k) for e in tracker.observe(_clip(60.0 * k, det), f"enc{k}")]
    kinds += [(e.kind, -1) for e in tracker.close()]
    assert kinds == [("start", 0), ("update", 2), ("end", 5), ("start", 6), ("end", -1)]
