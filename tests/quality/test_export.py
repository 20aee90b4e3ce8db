"""detect's Raven/Audacity writers, read back by our own readers."""

from __future__ import annotations

from pathlib import Path

from listener.config import DetectionConfig
from listener.detection.rule import WindowScore, decide_clip
from listener.quality.export import audacity_labels, raven_table
from listener.quality.labels import read_audacity, read_raven

DET = DetectionConfig(clip_s=10.0)


def _clip(start: float, scores: list[float]):  # type: ignore[no-untyped-def]
    windows = [WindowScore(start + i, start + i + 2, s) for i, s in enumerate(scores)]
    return decide_clip(windows, start, start + 10.0, DET)


def test_writers_round_trip_through_the_readers(tmp_path: Path) -> None:
    # Clip 1: windows 2..5 score 0.9, so unit j = mean(c_{j-1}, c_j) is 0.5 at j = 2 and 6
    # (not > 0.5) and 0.9 at j = 3..5: positive seconds 13, 14, 15 -> 13..16 s. Clip 2: quiet.
    clips = [_clip(10.0, [0.1, 0.1, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1]),
             _clip(20.0, [0.1] * 9)]
    assert clips[0].detected and not clips[1].detected
    audio = tmp_path / "rec.wav"
    audio.write_bytes(b"")
    table = tmp_path / "rec.Table.1.selections.txt"
    table.write_text(raven_table([(str(audio), clips)], DET))
    sels = read_raven(table).items[0].selections
    assert [(s.start_s, s.end_s, s.positive) for s in sels] == [(13.0, 16.0, True)]
    track = tmp_path / "rec.txt"
    track.write_text(audacity_labels(clips, DET))
    res = read_audacity(track)
    assert [(s.start_s, s.end_s) for s in res.items[0].selections] == [(13.0, 16.0)]
    assert res.items[0].selections[0].label == "call 90.0"
