"""``listener train --reviews``: bad options are named, an undecodable clip is a listed problem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from listener.errors import ListenerError
from listener.training.reviews import load_reviews

RATE = 16000


def _export(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("yes.wav", "no.wav"):
        sf.write(folder / name, 0.1 * rng.standard_normal(RATE), RATE)
    (folder / "broken.wav").write_bytes(b"RIFF not really a wave file" * 10)
    export = folder / "export.json"
    export.write_text(json.dumps([
        {"id": "a", "SRKWFound": "yes", "audioUri": "https://x/yes.wav"},
        {"id": "b", "SRKWFound": "no", "audioUri": "https://x/no.wav"},
        {"id": "c", "SRKWFound": "no", "audioUri": "https://x/broken.wav"}]))
    return export


def test_an_undecodable_clip_is_skipped_and_listed(tmp_path: Path) -> None:
    recs, counts, problems = load_reviews([_export(tmp_path)], [], RATE)
    assert sorted((r.path.name, r.positive) for r in recs) == [("no.wav", False),
                                                               ("yes.wav", True)]
    assert counts == {"yes": 1, "no": 1, "skipped": 1}
    assert [Path(p.file).name for p in problems] == ["broken.wav"]
    assert "cannot decode" in problems[0].message


def test_a_missing_reviews_file_or_clip_folder_is_named(tmp_path: Path) -> None:
    export = _export(tmp_path)
    with pytest.raises(ListenerError, match=r"--review-clips .*no_such_dir: no such folder"):
        load_reviews([export], [tmp_path / "no_such_dir"], RATE)
    for missing in ("gone.json", "station.reviews.jsonl"):
        with pytest.raises(ListenerError, match=rf"--reviews .*{missing}: no such file"):
            load_reviews([tmp_path / missing], [], RATE)


def test_a_renamed_reviews_file_says_how_it_is_read(tmp_path: Path) -> None:
    # A station's reviews file copied under another name is JSON lines, not an
    # export: the error says which name makes it read with its events file.
    renamed = tmp_path / "reviews-copy.jsonl"
    renamed.write_text('{"id": "a", "SRKWFound": "yes"}\n{"id": "b", "SRKWFound": "no"}\n')
    with pytest.raises(ListenerError, match=r"reviews-copy.jsonl: not readable JSON.*"
                       r"<events>\.reviews\.jsonl \(a rotation suffix may follow\), beside"):
        load_reviews([renamed], [], RATE)


def test_a_rotated_reviews_file_is_read_with_the_events_and_their_rotated_copies(
        tmp_path: Path) -> None:
    # logrotate renamed both files; one reviewed event is in the rotated events
    # file, the other in the current one.
    _export(tmp_path)
    (tmp_path / "events.jsonl.1").write_text(
        json.dumps({"id": "a", "kind": "detection", "audioUri": "https://x/yes.wav"}) + "\n")
    (tmp_path / "events.jsonl").write_text(
        json.dumps({"id": "b", "kind": "detection", "audioUri": "https://x/no.wav"}) + "\n")
    rotated = tmp_path / "events.reviews.jsonl-20261206"
    rotated.write_text("\n".join(json.dumps(r) for r in (
        {"id": "a", "SRKWFound": "no"}, {"id": "a", "SRKWFound": "yes"},
        {"id": "b", "SRKWFound": "no"})) + "\n")
    recs, counts, _ = load_reviews([rotated], [], RATE)
    assert sorted((r.path.name, r.positive) for r in recs) == [("no.wav", False),
                                                               ("yes.wav", True)]
    assert counts == {"yes": 1, "no": 1, "skipped": 0}
    lone = tmp_path / "lone" / "station.reviews.jsonl.2"
    lone.parent.mkdir()
    lone.write_text(json.dumps({"id": "a", "SRKWFound": "yes"}) + "\n")
    with pytest.raises(ListenerError, match=r"its events file station\.jsonl is not next"):
        load_reviews([lone], [], RATE)
