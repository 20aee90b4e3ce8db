"""listener.audio.level: the stream level the daemon exports as listener_audio_level_dbfs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from listener.audio.level import FLOOR_DBFS, LevelMeter, level_dbfs

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
