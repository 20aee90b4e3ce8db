"""Fuzzing the label readers: Raven selection tables, Audacity label tracks, moderator JSON."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from listener.errors import ListenerError
from listener.quality.labels import LabelSet, read_label_file

FUZZ = settings(settings.get_profile("listener-fuzz"), max_examples=300)

_RAVEN_HEAD = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Begin Path",
               "Begin File", "Annotation", "Low Freq (Hz)"]
_cell = st.one_of(st.sampled_from(["1", "2.5", "-1", "nan", "inf", "1e308", "", "rec.wav",
                                   "../rec.wav", "/abs/rec.wav", "C:\\x\\rec.wav", "call",
                                   "no", "Spectrogram 1", "\x00", ".."]),
                  st.text(max_size=12))
_table = st.builds(
    lambda head, rows: "\n".join("\t".join(r) for r in [head, *rows]),
    st.lists(st.sampled_from(_RAVEN_HEAD), min_size=1, max_size=7).map(
        lambda h: h if "Begin Time (s)" in h else ["Begin Time (s)", *h]),
    st.lists(st.lists(_cell, max_size=8), max_size=8))
_audacity = st.builds(lambda rows: "\n".join("\t".join(r) for r in rows),
                      st.lists(st.lists(_cell, min_size=1, max_size=4), max_size=8))
_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
_record = st.fixed_dictionaries({}, optional={
    "SRKWFound": st.sampled_from(["yes", "no", "don't know", "", None, 1, [], {}]) | _json_value,
    "state": _json_value,
    "audioUri": st.sampled_from(["https://x/rec.wav", "rec.wav", "http://[::1/rec.wav",
                                 "file:///etc/passwd", "../../rec.wav", "", "\x00"]) | _json_value,
    "location": _json_value, "source_guid": _json_value})
_moderator = st.one_of(
    st.lists(_record, max_size=4).map(json.dumps), _record.map(json.dumps),
    _json_value.map(json.dumps), st.text(max_size=60))


def _read(name: str, data: bytes) -> LabelSet | None:
    """Write ``name`` beside a recording it may name, and read it."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "rec.wav").write_bytes(b"RIFF")
        path = folder / name
        path.write_bytes(data)
        try:
            out = read_label_file(path)
        except ListenerError as err:
            assert str(err)
            return None
    for problem in out.problems:
        assert problem.message
    return out


@FUZZ
@given(text=_table)
@example(text="Begin Time (s)\tView\n1\t2")  # no End Time column
@example(text="Begin Time (s)\tEnd Time (s)\tBegin Path\n1\t2\t\x00")
def test_raven_tables_give_labels_or_problems(text: str) -> None:
    _read("rec.Table.1.selections.txt", text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(text=_audacity)
@example(text="1\tnan\tcall\n1e400\t2\n-1\t0\n")
def test_audacity_tracks_give_labels_or_problems(text: str) -> None:
    _read("rec.txt", text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(text=_moderator)
@example(text='{"SRKWFound": "yes", "audioUri": "http://[::1/rec.wav"}')
@example(text="[" * 100_000)  # nesting deeper than the JSON parser recurses
def test_moderator_json_gives_labels_or_problems(text: str) -> None:
    _read("records.json", text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(data=st.binary(max_size=200), name=st.sampled_from(["a.txt", "b.json", "c.csv"]))
def test_any_bytes_give_labels_or_problems(data: bytes, name: str) -> None:
    _read(name, data)
