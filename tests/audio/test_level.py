"""listener.audio.level: the stream level the daemon exports as listener_audio_level_dbfs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from listener.audio.level import (
    FLOOR_DBFS,
    SILENT_DBFS,
    LevelMeter,
    LevelRange,
    LevelWatch,
    level_dbfs,
)

RATE = 48_000


def test_a_known_level_reads_back_in_dbfs() -> None:
    meter = LevelMeter()
    tone = 0.1 * np.sqrt(2) * np.sin(2 * np.pi * 1000 * np.arange(RATE) / RATE)
    assert meter.update(tone.astype(np.float32)[None, :], RATE) == pytest.approx(-20.0, abs=0.01)


def test_digital_silence_reads_the_floor_not_minus_infinity() -> None:
    assert LevelMeter().update(np.zeros((2, RATE), np.float32), RATE) == FLOOR_DBFS
    assert level_dbfs(0.0, 0) == FLOOR_DBFS


def test_a_loud_minute_is_forgotten_one_span_later() -> None:
    meter = LevelMeter(span_s=10.0)
    for _ in range(60):
        loud = meter.update(np.full((1, RATE), 0.5, np.float32), RATE)
    assert loud == pytest.approx(-6.02, abs=0.01)
    for _ in range(9):
        meter.update(np.full((1, RATE), 0.001, np.float32), RATE)
    assert meter.update(np.full((1, RATE), 0.001, np.float32), RATE) == pytest.approx(-60.0,
                                                                                        abs=0.01)


def test_a_block_longer_than_the_span_is_its_own_level() -> None:
    meter = LevelMeter(span_s=1.0)
    meter.update(np.full((1, RATE), 0.5, np.float32), RATE)
    assert meter.update(np.full((1, 3 * RATE), 0.01, np.float32), RATE) == pytest.approx(-40.0,
                                                                                         abs=0.01)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4 * RATE), st.floats(0.0, 1.0)), min_size=1,
                max_size=30))
def test_the_level_is_finite_and_bounded_for_any_blocks(blocks: list[tuple[int, float]]) -> None:
    meter = LevelMeter(span_s=2.0)
    for n, amplitude in blocks:
        level = meter.update(np.full((1, n), amplitude, np.float32), RATE)
        assert FLOOR_DBFS <= level <= 0.0 + 1e-6


DEMO = LevelRange("demo", -81.0, -1.0)


def _feed(watch: LevelWatch, level: float, seconds: float, step: float = 0.5) -> None:
    for _ in range(round(seconds / step)):
        watch.update(level, step)


def test_a_stream_that_stays_below_a_models_levels_is_reported_once(
        caplog: pytest.LogCaptureFixture) -> None:
    watch = LevelWatch("rpi_lab", [DEMO, LevelRange("narrow", -46.0, -16.0)], hold_s=60.0)
    caplog.set_level(logging.INFO, logger="listener.audio.level")
    _feed(watch, -90.0, 59.5)
    assert watch.outside() == () and not caplog.records  # not yet a minute
    _feed(watch, -90.0, 0.5)
    assert [(r.model, side) for r, side in watch.outside()] == [("demo", "below"),
                                                                 ("narrow", "below")]
    _feed(watch, -90.0, 600.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once per model, not once per block
    assert "station rpi_lab" in warnings[0] and "stayed below the levels model demo trained at" \
        " (-81 to -1 dBFS) for 60 s, now -90 dBFS" in warnings[0]


def test_a_short_excursion_is_not_reported_and_a_return_is(
        caplog: pytest.LogCaptureFixture) -> None:
    watch = LevelWatch("s", [DEMO], hold_s=60.0)
    caplog.set_level(logging.INFO, logger="listener.audio.level")
    for _ in range(5):  # 40 s loud, 1 s inside: the run starts again each time
        _feed(watch, 3.0, 40.0)
        _feed(watch, -30.0, 1.0)
    assert watch.outside() == () and not caplog.records
    _feed(watch, 3.0, 60.0)
    assert [side for _, side in watch.outside()] == ["above"]
    _feed(watch, -30.0, 59.0)
    assert [side for _, side in watch.outside()] == ["above"]  # still reported
    _feed(watch, -30.0, 1.0)
    assert watch.outside() == ()
    assert caplog.records[-1].levelno == logging.INFO
    assert "back within the levels model demo trained at" in caplog.records[-1].getMessage()


def test_silence_is_left_to_the_silent_alert() -> None:
    watch = LevelWatch("s", [DEMO], hold_s=60.0)
    _feed(watch, SILENT_DBFS, 600.0)
    _feed(watch, FLOOR_DBFS, 600.0)
    assert watch.outside() == ()
    _feed(watch, -95.0, 30.0)  # silence between does not restart or end a run
    _feed(watch, FLOOR_DBFS, 30.0)
    _feed(watch, -95.0, 30.0)
    assert [side for _, side in watch.outside()] == ["below"]


def test_a_file_outside_a_models_levels_gets_one_line() -> None:
    assert DEMO.outside_note([-40.0] * 7 + [-90.0] * 2) is None  # under a quarter
    assert DEMO.outside_note([]) is None
    assert DEMO.outside_note([-40.0] * 6 + [FLOOR_DBFS] * 4) is None  # silence is not judged
    assert DEMO.outside_note([-40.0] * 5 + [-90.0] * 2 + [3.0]) == (
        "2 of 8 windows are below and 1 above the levels model demo trained at "
        "(-81 to -1 dBFS): its scores there are untested")
    assert DEMO.outside_note([3.0] * 4).startswith("4 of 4 windows are above the levels")
