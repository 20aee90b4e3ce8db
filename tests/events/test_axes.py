"""The time and frequency scales drawn around the clip pictures."""

from __future__ import annotations

import numpy as np
import pytest

from listener.events.axes import INK, PAPER, add_axes, draw_text, margins, nice_step, text_width


def runs(line: np.ndarray) -> list[int]:
    """Start indices of the runs of ink pixels along a line of ``(n, 3)`` pixels."""
    ink = (line == INK).all(axis=1).astype(np.int8)
    return [int(i) for i in np.flatnonzero(np.diff(np.r_[0, ink]) == 1)]


def test_scales_tick_every_2_khz_and_every_10_s() -> None:
    picture = np.full((400, 1200, 3), 7, dtype=np.uint8)
    out = add_axes(picture, seconds=68.0, f_max_hz=10_000.0)
    top, left, bottom, right = margins(4)
    assert out.shape == (top + 400 + bottom, left + 1200 + right, 3)
    np.testing.assert_array_equal(out[top:top + 400, left:left + 1200], picture)
    assert (out[0, :] == PAPER).all()  # a white frame
    # Frequency ticks: one column left of the picture, 0..10 kHz every 2 kHz.
    ys = runs(out[:, left - 1])
    assert len(ys) == 6 and ys[0] <= top and ys[-1] >= top + 396
    # Time ticks: one row under the picture, 0..60 s every 10 s (68 s: 7 ticks).
    xs = runs(out[top + 400, left:])
    assert len(xs) == 7 and abs(xs[2] - xs[1] - 10 / 68 * 1199) <= 1
    # Labels: ink in the left margin beside the ticks and under the time ticks.
    assert (out[top:top + 400, :left - 12] == INK).all(axis=2).any()
    assert (out[top + 400 + 12:, left:left + 1200] == INK).all(axis=2).any()


def test_small_pictures_get_a_small_font_and_fewer_ticks() -> None:
    out = add_axes(np.zeros((100, 200, 3), np.uint8), seconds=6.0, f_max_hz=4000.0)
    top, left, _, _ = margins(1)
    assert len(runs(out[top + 100, left:])) == 4  # 0, 2, 4, 6 s
    assert len(runs(out[:, left - 1])) in (3, 5)  # 0..4 kHz every 2 or 1 kHz


def test_text_and_steps() -> None:
    img = np.zeros((20, 40, 3), np.uint8)
    draw_text(img, "10 kHz", 0, 0, 1, colour=(255, 255, 255))
    assert img[:7, :text_width("10 kHz", 1)].any() and not img[8:].any()
    assert [nice_step(10, 5), nice_step(68, 7), nice_step(0.9, 4)] == [2, 10, 0.5]
    with pytest.raises(ValueError, match="uint8"):
        add_axes(np.zeros((4, 4, 3)), seconds=1, f_max_hz=1000)
