"""The window cutter: grid alignment, exact sample positions, UTC stamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from listener.audio.windows import WindowCutter


def _feed(cutter: WindowCutter, total: int, block: int, channels: int = 1):
    x = np.arange(total, dtype=np.float32)
    out = []
    for i in range(0, total, block):
        chunk = np.repeat(x[None, i:i + block], channels, axis=0)
        out += cutter.push(chunk)
    return out


@pytest.mark.parametrize("block", [1000, 4800, 48000, 100000])
def test_windows_independent_of_block_size(block: int) -> None:
    c = WindowCutter(2.0, 1.0)
    c.reset(0.0, 48000, None)
    wins = _feed(c, 48000 * 10, block, channels=2)
    assert [w.start_s for w in wins] == [float(i) for i in range(9)]
    for w in wins:
        first = int(w.start_s * 48000)
        assert w.samples.shape == (96000,)
        assert w.samples[0] == first and w.samples[-1] == first + 95999


def test_reset_mid_stream_aligns_to_the_grid() -> None:
    c = WindowCutter(2.0, 1.0)
    t0 = datetime(2020, 7, 7, 19, 30, 18, tzinfo=UTC)
    c.reset(11.4056, 48000, t0)
    wins = _feed(c, 48000 * 5, 7000)
    assert wins[0].start_s == 12.0
    assert wins[0].utc == t0 + timedelta(seconds=12)
    # sample 0 of the feed is stream offset 11.4056 s -> window 12 s starts at sample 28531
    assert wins[0].samples[0] == round(12.0 * 48000) - round(11.4056 * 48000)


def test_awkward_rate_has_no_drift() -> None:
    c = WindowCutter(2.0, 1.0)
    c.reset(0.0, 25057, None)
    wins = _feed(c, 25057 * 3600, 25057 * 7)
    last = wins[-1]
    assert last.start_s == 3598.0
    assert last.samples[0] == 3598 * 25057


def test_tail_of_a_short_file() -> None:
    c = WindowCutter(2.0, 1.0)
    c.reset(0.0, 22050, None)
    assert _feed(c, 30000, 4096) == []
    tail = c.tail()
    assert tail is not None and tail.samples.size == 30000
    assert tail.end_s == pytest.approx(30000 / 22050)


def test_nonfinite_samples_become_zero_and_are_counted() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4 * 1000).astype(np.float32)
    clean = WindowCutter(2.0, 1.0)
    clean.reset(0.0, 1000, None)
    expected = clean.push(x.copy())
    x[2500], x[3100] = np.nan, -np.inf
    c = WindowCutter(2.0, 1.0)
    c.reset(0.0, 1000, None)
    wins = c.push(x)
    assert c.nonfinite_samples == 2 and clean.nonfinite_samples == 0
    assert all(np.isfinite(w.samples).all() for w in wins)
    assert wins[1].samples[1500] == 0.0 and wins[2].samples[1100] == 0.0
    # A window with finite samples only is the clean cutter's, bit for bit.
    assert np.array_equal(wins[0].samples, expected[0].samples)
