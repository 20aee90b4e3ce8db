"""PR curves and score histograms as PNG, drawn with numpy (no plotting library).

Plots have no text (there is no font here): the JSON and the summary carry the
numbers, and each picture's layout is fixed and documented in
``docs/quality.md``: axes from 0 to 1, grid lines every 0.25, one colour per
model (PR curve) or per class (histograms: calls orange, no-call blue).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from listener.events.png import write_png
from listener.quality.metrics import pr_curve

SIZE = 320
MARGIN = 20
COLOURS = ((214, 96, 39), (31, 119, 180), (44, 160, 44), (148, 103, 189), (140, 86, 75))
CALL_COLOUR, NOCALL_COLOUR = (214, 96, 39), (31, 119, 180)


def _canvas() -> np.ndarray:
    img = np.full((SIZE + 2 * MARGIN, SIZE + 2 * MARGIN, 3), 255, dtype=np.uint8)
    for k in range(5):  # grid every 0.25, darker frame
        pos = MARGIN + round(k * SIZE / 4)
        shade = 120 if k in (0, 4) else 220
        img[MARGIN:MARGIN + SIZE + 1, pos] = shade
        img[pos, MARGIN:MARGIN + SIZE + 1] = shade
    return img


def _xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Data (0..1, 0..1) -> pixel column, row (row 0 at the top)."""
    cols = MARGIN + np.clip(np.round(x * SIZE), 0, SIZE).astype(int)
    rows = MARGIN + SIZE - np.clip(np.round(y * SIZE), 0, SIZE).astype(int)
    return cols, rows


def _polyline(img: np.ndarray, x: np.ndarray, y: np.ndarray, colour: tuple[int, ...]) -> None:
    """Straight segments between points, sampled densely, 2 px thick."""
    if x.size == 1:
        x, y = np.r_[x, x], np.r_[y, y]
    for i in range(x.size - 1):
        t = np.linspace(0.0, 1.0, 2 * SIZE)
        cols, rows = _xy(x[i] + t * (x[i + 1] - x[i]), y[i] + t * (y[i + 1] - y[i]))
        for dc, dr in ((0, 0), (1, 0), (0, 1)):
            img[np.clip(rows + dr, 0, img.shape[0] - 1), np.clip(cols + dc, 0, img.shape[1] - 1)] \
                = colour


def pr_png(path: Path, curves: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Precision (y) against recall (x), one curve per ``(labels, scores)``."""
    img = _canvas()
    for k, (labels, scores) in enumerate(curves):
        if not labels.size or not labels.sum():
            continue
        precision, recall, _ = pr_curve(labels, scores)
        # Step shape: precision holds until the next recall point (average precision).
        xs = np.repeat(np.r_[0.0, recall], 2)[1:-1]
        ys = np.repeat(precision, 2)
        _polyline(img, xs, ys, COLOURS[k % len(COLOURS)])
    write_png(path, img)


def histogram_png(path: Path, labels: np.ndarray, scores: np.ndarray, bins: int = 20) -> None:
    """Score histograms (0..1, ``bins`` bins) of calls and no-calls, each scaled to its peak."""
    img = _canvas()
    width = SIZE / bins
    for cls, colour, offset in ((1, CALL_COLOUR, 0.0), (0, NOCALL_COLOUR, 0.5)):
        counts, _ = np.histogram(scores[labels == cls], bins=bins, range=(0.0, 1.0))
        if not counts.any():
            continue
        heights = counts / counts.max()
        for b, h in enumerate(heights):
            left = MARGIN + round(b * width + offset * width)
            right = MARGIN + round(b * width + (offset + 0.5) * width)
            top = MARGIN + SIZE - round(h * SIZE)
            img[top:MARGIN + SIZE, left:max(right, left + 1)] = colour
    write_png(path, img)
