"""Label readers on hand-written fixtures that follow each tool's documented format."""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.quality.labels import (
    LabelError,
    read_audacity,
    read_clip_folder,
    read_label_file,
    read_labels,
    read_orcahello,
    read_raven,
)

LABELS = Path(__file__).parents[1] / "data" / "labels"


def test_raven_table_dedupes_views_and_reports_bad_rows_by_line() -> None:
    res = read_raven(LABELS / "recording.Table.1.selections.txt")
    assert len(res.items) == 1
    item = res.items[0]
    assert item.path == LABELS / "recording.wav" and item.label is None
    sels = [(s.start_s, s.end_s, s.positive, s.label, s.line) for s in item.selections]
    # Selection 1 appears in two views and is kept once; selection 3 (line 5) overlaps
    # it (two animals at once: one call selection, not an error) and the "noise"
    # selection, which keeps only the time the call leaves.
    assert sels == [(0.1, 1.1, True, "S01", 2), (1.1, 1.3, False, "noise", 4)]
    problems = {p.line: p.message for p in res.problems}
    assert set(problems) == {6, 7}
    assert "zero-length" in problems[6]
    assert "bad times" in problems[7]
    assert all(p.file.endswith("recording.Table.1.selections.txt") for p in res.problems)


def test_audacity_track_skips_frequency_lines_and_reports_bad_lines() -> None:
    res = read_audacity(LABELS / "recording.txt")
    sels = [(s.start_s, s.end_s, s.positive, s.line) for s in res.items[0].selections]
    assert sels == [(0.1, 0.9, True, 1), (1.0, 1.3, False, 3)]
    assert [(p.line, "reversed" in p.message or "expected" in p.message)
            for p in res.problems] == [(5, True), (6, True)]


def test_orcahello_records_give_clip_labels_sites_and_problems() -> None:
    res = read_orcahello(LABELS / "records.json")
    assert [(i.label, i.site, i.path.name) for i in res.items] == [
        (True, "Orcasound Lab", "recording.wav"), (False, "Bush Point", "recording.wav")]
    text = [str(p) for p in res.problems]
    assert len(text) == 2  # "don't know" is skipped quietly: not a label, not an error
    assert "record 4" in text[0] and "missing.wav not found" in text[0]
    assert "record 5" in text[1] and "no moderator verdict" in text[1]


def test_clip_folders_map_class_names(tmp_path: Path) -> None:
    for cls in ("calls", "nocalls", "mystery"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "a.wav").write_bytes(b"")
    res = read_clip_folder(tmp_path)
    assert sorted((i.path.parent.name, i.label) for i in res.items) == [
        ("calls", True), ("nocalls", False)]
    assert "unknown class folder 'mystery'" in str(res.problems[0])
    extra = read_clip_folder(tmp_path, positive=["mystery"])
    assert len(extra.items) == 3 and not extra.problems


def test_unknown_format_and_hostile_paths(tmp_path: Path) -> None:
    odd = tmp_path / "notes.txt"
    odd.write_text("hello\tworld\n")
    res = read_label_file(odd)
    assert not res.items and "notes.txt:1: unknown label format" in str(res.problems[0])
    # A path in a label file never leads outside the label file's folder.
    (tmp_path / "sub").mkdir()
    table = tmp_path / "sub" / "t.selections.txt"
    table.write_text("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tBegin Path"
                     "\tAnnotation\n"
                     f"1\tSpectrogram 1\t1\t0\t1\t../{(LABELS / 'recording.wav')}\tcall\n")
    res = read_raven(table)
    assert not res.items and "recording.wav not found in" in str(res.problems[0])
    with pytest.raises(LabelError, match="no labelled audio"):
        read_labels(tmp_path / "sub")
    with pytest.raises(LabelError, match="no such file"):
        read_labels(tmp_path / "absent")


_RAVEN_HEAD = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\t"


def _raven(tmp_path: Path, extra: list[str], rows: list[list[str]]) -> Path:
    (tmp_path / "rec.wav").write_bytes(b"")
    table = tmp_path / "rec.Table.1.selections.txt"
    lines = [_RAVEN_HEAD + "\t".join(extra)]
    lines += [f"{n}\tSpectrogram 1\t1\t" + "\t".join(r) for n, r in enumerate(rows, 1)]
    table.write_text("\n".join(lines) + "\n")
    return table


def test_raven_labels_come_from_the_annotation_column_not_measurements(
        tmp_path: Path) -> None:
    # Raven's measurement columns come before the annotation: none of them is a label.
    table = _raven(tmp_path, ["Peak Freq (Hz)", "Dur 90% (s)", "Begin Clock Time", "Begin Path",
                              "File Offset (s)", "Begin File", "Annotation"],
                   [["1.0", "3.0", "1200.5", "1.8", "10:00:01", "C:\\d\\rec.wav", "1.0",
                     "rec.wav", "noise"],
                    ["5.0", "7.0", "800.0", "1.9", "10:00:05", "C:\\d\\rec.wav", "5.0",
                     "rec.wav", "S1"]])
    res = read_raven(table)
    assert [(s.positive, s.label) for s in res.items[0].selections] == [(False, "noise"),
                                                                         (True, "S1")]
    # A named column wins wherever it is, in any case; else an unnamed non-Raven one.
    named = _raven(tmp_path, ["Notes", "CALL TYPE"], [["1", "2", "bad box", "noise"]])
    assert read_raven(named).items[0].selections[0].label == "noise"
    custom = _raven(tmp_path, ["Peak Freq (Hz)", "Begin Date", "Verdict"],
                    [["1", "2", "900", "2020-01-01", "noise"]])
    assert read_raven(custom).items[0].selections[0].label == "noise"


def test_raven_table_without_an_annotation_column_is_reported_not_guessed(
        tmp_path: Path) -> None:
    table = _raven(tmp_path, ["Peak Freq (Hz)", "Begin Clock Time", "File Offset (s)"],
                   [["1", "2", "900", "10:00:01", "1"]])
    res = read_raven(table)
    assert not res.items
    text = str(res.problems[0])
    assert text.startswith(f"{table}:1: no annotation column")
    assert "Peak Freq (Hz), Begin Clock Time, File Offset (s)" in text


@pytest.mark.parametrize("times", ["nan\t2.0", "1.0\tinf", "-inf\t1.0", "1.0\tNaN"])
def test_selection_times_that_are_not_finite_are_bad_times(tmp_path: Path, times: str) -> None:
    """``float`` reads nan and inf; a selection there would score nothing, or everything."""
    (tmp_path / "rec.wav").write_bytes((LABELS / "recording.wav").read_bytes())
    (tmp_path / "rec.txt").write_text(f"0.1\t0.9\tcall\n{times}\tcall\n", encoding="utf-8")
    res = read_audacity(tmp_path / "rec.txt")
    assert [(s.start_s, s.end_s) for s in res.items[0].selections] == [(0.1, 0.9)]
    assert [p.line for p in res.problems] == [2]
    raven = tmp_path / "rec.Table.1.selections.txt"
    raven.write_text("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tAnnotation\n"
                     f"1\tSpectrogram 1\t1\t{times}\tcall\n", encoding="utf-8")
    res = read_raven(raven)
    assert not res.items and "bad times" in res.problems[0].message
