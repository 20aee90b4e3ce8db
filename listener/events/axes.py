"""A time and frequency scale around a spectrogram picture, with a built-in pixel font.

The clip pictures are drawn with numpy alone (no imaging or font library), so
the few characters a scale needs are here as 5x7 bitmaps. :func:`add_axes`
puts the picture on a white frame: frequency ticks in kHz on the left (the
unit above them), time ticks in seconds from the start of the clip's audio
underneath (so a tick matches the audio player's position), each tick a short
dark line against the picture's edge.
"""

from __future__ import annotations

import math

import numpy as np

# 5 columns x 7 rows per glyph, "#" = ink. Only what scale labels use.
_GLYPHS = {
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("####.", "....#", "....#", ".###.", "....#", "....#", "####."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    ".": (".....", ".....", ".....", ".....", ".....", ".##..", ".##.."),
    "k": ("#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#."),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "z": (".....", ".....", "#####", "...#.", "..#..", ".#...", "#####"),
    "s": (".....", ".....", ".####", "#....", ".###.", "....#", "####."),
    " ": (".....",) * 7,
}
_FONT = {ch: np.array([[c == "#" for c in row] for row in rows], dtype=bool)
         for ch, rows in _GLYPHS.items()}
INK = (40, 44, 52)
PAPER = (255, 255, 255)


def text_width(text: str, scale: int) -> int:
    """Pixel width of ``text`` at ``scale`` (6 columns a character, less the last gap)."""
    return max(0, 6 * len(text) - 1) * scale


def draw_text(img: np.ndarray, text: str, x: int, y: int, scale: int,
              colour: tuple[int, int, int] = INK) -> None:
    """Draw ``text`` with its top-left corner at column ``x``, row ``y`` (clipped)."""
    for i, ch in enumerate(text):
        glyph = np.kron(_FONT[ch], np.ones((scale, scale), dtype=bool))
        x0 = x + 6 * scale * i
        rows, cols = np.nonzero(glyph)
        rows, cols = rows + y, cols + x0
        keep = (rows >= 0) & (rows < img.shape[0]) & (cols >= 0) & (cols < img.shape[1])
        img[rows[keep], cols[keep]] = colour


def nice_step(span: float, max_ticks: int) -> float:
    """The smallest of 1, 2, 5 x 10^k giving at most ``max_ticks`` intervals over ``span``."""
    if span <= 0:
        return 1.0
    raw = span / max(1, max_ticks)
    power = 10.0 ** math.floor(math.log10(raw))
    for mult in (1.0, 2.0, 5.0, 10.0):
        if mult * power >= raw:
            return mult * power
    return 10.0 * power


def _label(value: float) -> str:
    return f"{value:.0f}" if abs(value - round(value)) < 1e-6 else f"{value:g}"


def margins(scale: int) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` frame widths in pixels at font ``scale``."""
    tick = 3 * scale
    return (13 * scale, text_width("10.5", scale) + tick + 2 * scale, tick + 12 * scale,
            text_width("00 s", scale) // 2 + 2 * scale)


def add_axes(img: np.ndarray, *, seconds: float, f_max_hz: float,
             scale: int | None = None) -> np.ndarray:
    """``img`` (``(H, W, 3)`` uint8, 0 Hz at the bottom, time left to right over
    ``seconds``, ``f_max_hz`` at the top) framed with labelled scales; the picture
    keeps its pixels, at :func:`margins` ``(top, left)``. ``scale`` (the font's
    pixel size) defaults to one per 100 rows of picture."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 picture, got {img.shape} {img.dtype}")
    height, width = img.shape[:2]
    s = scale or max(1, round(height / 100))
    tick = 3 * s
    top, left, bottom, right = margins(s)
    out = np.empty((top + height + bottom, left + width + right, 3), dtype=np.uint8)
    out[:] = PAPER
    out[top:top + height, left:left + width] = img
    # Frequency: kHz ticks up the left edge, the unit above them.
    khz = f_max_hz / 1000.0
    step = nice_step(khz, max(2, height // (14 * s)))
    for k in range(math.floor(khz / step + 1e-9) + 1):
        value = k * step
        y = top + height - 1 - round(value / khz * (height - 1)) if khz > 0 else top + height - 1
        out[max(top, y - s // 2):y + max(1, s // 2), left - tick:left] = INK
        text = _label(value)
        draw_text(out, text, left - tick - s - text_width(text, s),
                  min(max(0, y - 7 * s // 2), out.shape[0] - 7 * s), s)
    draw_text(out, "kHz", max(0, left - tick - s - text_width("kHz", s)), s, s)
    # Time: seconds from the start of the clip's audio, along the bottom edge.
    step = nice_step(seconds, max(2, width // (40 * s)))
    for k in range(math.floor(seconds / step + 1e-9) + 1):
        value = k * step
        x = left + (round(value / seconds * (width - 1)) if seconds > 0 else 0)
        out[top + height:top + height + tick, max(left, x - s // 2):x + max(1, s // 2)] = INK
        text = _label(value) + (" s" if k == 0 or value + step > seconds else "")
        tx = min(max(0, x - text_width(text, s) // 2), out.shape[1] - text_width(text, s))
        draw_text(out, text, tx, top + height + tick + 2 * s, s)
    return out
