"""Overlapping selections: one class merges, a call is never shortened by a no-call box."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from listener.quality.labels import read_audacity
from listener.quality.selections import Selection, add_selection


def _spans(sels: list[Selection]) -> list[tuple[float, float, bool]]:
    return [(s.start_s, s.end_s, s.positive) for s in sels]


def _added(*boxes: tuple[float, float, bool]) -> list[Selection]:
    sels: list[Selection] = []
    for a, b, pos in boxes:
        add_selection(sels, Selection(a, b, pos, "call" if pos else "noise"), "t.txt")
    return sels


def test_a_noise_box_overlapping_a_call_keeps_only_the_time_the_call_leaves(
        tmp_path: Path) -> None:
    (tmp_path / "rec.wav").write_bytes(b"")
    (tmp_path / "rec.txt").write_text("1.0\t4.0\tcall\n3.0\t10.0\tnoise\n")
    res = read_audacity(tmp_path / "rec.txt")
    assert [(s.start_s, s.end_s, s.positive, s.label) for s in res.items[0].selections] == [
        (1.0, 4.0, True, "call"), (4.0, 10.0, False, "noise")]
    assert _spans(_added((3, 10, False), (1, 4, True))) == [(1, 4, True), (4, 10, False)]
    # Around a call: two pieces; inside one: nothing left.
    assert _spans(_added((0, 10, False), (4, 6, True))) == [(0, 4, False), (4, 6, True),
                                                            (6, 10, False)]
    assert _spans(_added((4, 6, False), (0, 10, True))) == [(0, 10, True)]
    # One class: the union, as before.
    assert _spans(_added((1, 3, True), (2, 5, True), (7, 8, False), (7.5, 9, False))) == [
        (1, 5, True), (7, 9, False)]


def test_the_result_does_not_depend_on_the_order_of_the_rows() -> None:
    rng = random.Random(7)
    for _ in range(30):
        boxes = []
        for _ in range(5):
            a = rng.randint(0, 18)
            boxes.append((float(a), float(a + rng.randint(1, 6)), rng.random() < 0.5))
        results = {tuple(_spans(_added(*order))) for order in itertools.permutations(boxes)}
        assert len(results) == 1, boxes
        spans = results.pop()
        calls = [(a, b) for a, b, pos in spans if pos]
        assert all(not (a < d and c < b) for a, b, pos in spans if not pos for c, d in calls)
