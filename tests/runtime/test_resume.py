"""The state file: a corrupt one is set aside with an ERROR, never trusted (issue 14)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from listener.runtime.resume import StateStore, StreamState


@pytest.mark.parametrize("clip_end", ["NaN", "Infinity", "-Infinity", "1e12", "-5"])
def test_absurd_clip_end_is_a_corrupt_state_file(tmp_path: Path, clip_end: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    store = StateStore(tmp_path, "st")
    store.save(StreamState("node/hls/1700000000", 5, 60.0))
    text = store.path.read_text().replace('"clip_end_s": 60.0', f'"clip_end_s": {clip_end}')
    assert clip_end in text
    store.path.write_text(text)
    with caplog.at_level(logging.ERROR, logger="listener"):
        assert store.load() is None
    assert store.path.with_suffix(".corrupt").exists() and not store.path.exists()
    assert any("clip_end_s" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("body", [
    '{"version": 1, "stream_key": "k", "resume_sequence": 1e400, "clip_end_s": 5}',
    '{"version": 1, "stream_key": "k", "resume_sequence": Infinity, "clip_end_s": 5}',
    '{"version": 1, "stream_key": "k", "resume_sequence": -7, "clip_end_s": 5}',
    '{"version": 1, "stream_key": "k", "resume_sequence": 5, "clip_end_s": 1' + "0" * 400 + "}",
    "[" * 100_000 + "]" * 100_000,
], ids=["1e400", "Infinity", "negative", "huge clip_end", "deep nesting"])
def test_an_unreadable_state_file_is_set_aside_not_a_crash(tmp_path: Path, body: str) -> None:
    store = StateStore(tmp_path, "st")
    store.path.write_text(body)
    assert store.load() is None
    assert store.path.with_suffix(".corrupt").exists() and not store.path.exists()


def test_a_sane_state_round_trips(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "st")
    store.save(StreamState("node/hls/1700000000", 5, 123.5, {"n": 1}))
    assert store.load() == StreamState("node/hls/1700000000", 5, 123.5, {"n": 1})
    assert json.loads(store.path.read_text())["version"] == 1
