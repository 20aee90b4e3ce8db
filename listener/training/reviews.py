"""Moderator reviews as training data (``listener train --reviews FILE``).

Two inputs, both written by the console:

* its export, a JSON array of OrcaHello moderator records (``SRKWFound`` and
  ``audioUri`` per detection);
* a station's ``<events>.reviews.jsonl`` (one line per review, the latest per
  event id wins), read with the ``<events>.jsonl`` next to it, which gives
  each event's ``audioUri``; a copy rotated by logrotate (``.1``,
  ``-20261206``) is read with the events file and its rotated copies.

``yes`` clips become calls, ``no`` clips hard negatives (the sounds this
model fired on that were not calls), ``don't know`` is skipped. The clip
audio is looked up by the ``audioUri`` file name in the clip folders given
(default: the reviews file's own folder). Every reviewed clip comes from the
station's live stream, so they form one source, ``reviews``.
"""

from __future__ import annotations

import glob
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from listener.errors import ListenerError
from listener.events.sinks.jsonl import read_records
from listener.quality.labels import LabelProblem, find_audio
from listener.training.cache import AudioCache
from listener.training.data import Recording

log = logging.getLogger(__name__)

_REVIEWS = ".reviews.jsonl"
_VERDICTS: dict[str, bool | None] = {"yes": True, "no": False, "don't know": None}


def _latest_reviews(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for doc in read_records(path):
        if isinstance(doc.get("id"), str) and doc.get("SRKWFound") in _VERDICTS:
            out[doc["id"]] = doc["SRKWFound"]
    return out


def _events_files(path: Path, stem: str) -> list[Path]:
    """The events files beside a reviews file ``<stem>.reviews.jsonl[rotation suffix]``:
    ``<stem>.jsonl`` and its rotated copies (``.1``, ``-20261206``; not compressed),
    since a reviewed event may have been rotated out of either."""
    return sorted(p for p in path.parent.glob(glob.escape(stem) + ".jsonl*")
                  if p.is_file() and not p.name.endswith(".gz"))


def _records(path: Path) -> list[dict[str, Any]]:
    """``[{"SRKWFound", "audioUri"}]`` from an export or a reviews.jsonl file."""
    if _REVIEWS in path.name:
        stem = path.name[:path.name.index(_REVIEWS)]
        events = _events_files(path, stem)
        if not events:
            raise ListenerError(f"--reviews {path}: its events file {stem}.jsonl is not next "
                                "to it (it gives each reviewed event's clip)")
        uris = {d["id"]: d.get("audioUri") for f in events for d in read_records(f)
                if isinstance(d.get("id"), str)}
        return [{"id": i, "SRKWFound": v, "audioUri": uris.get(i)}
                for i, v in _latest_reviews(path).items()]
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        hint = ("; a station's reviews file (JSON lines) is read by its name, "
                "<events>.reviews.jsonl (a rotation suffix may follow), beside its <events>.jsonl"
                if ".jsonl" in path.name else "")
        raise ListenerError(f"--reviews {path}: not readable JSON: {err}{hint}") from None
    records = doc if isinstance(doc, list) else [doc]
    return [r for r in records if isinstance(r, dict)]


def load_reviews(files: list[Path], clip_dirs: list[Path], rate: int,
                 cache: AudioCache | None = None,
                 ) -> tuple[list[Recording], dict[str, int], list[LabelProblem]]:
    """Reviewed clips as recordings, counts (yes, no, skipped) for the card, and problems.

    A clip ffmpeg cannot decode is skipped and listed, as in DATA folders.

    Raises:
        ListenerError: a reviews file or a clip folder does not exist (naming the option).
    """
    for path in files:
        if not path.is_file():
            raise ListenerError(f"--reviews {path}: no such file")
    for folder in clip_dirs:
        if not folder.is_dir():
            raise ListenerError(f"--review-clips {folder}: no such folder")
    cache = cache or AudioCache(None, rate, ())
    counts = {"yes": 0, "no": 0, "skipped": 0}
    out: list[Recording] = []
    problems: list[LabelProblem] = []
    for path in files:
        for rec in _records(path):
            verdict = str(rec.get("SRKWFound", "")).strip().lower()
            label = _VERDICTS.get(verdict)
            name = Path(urlparse(str(rec.get("audioUri") or "")).path).name
            audio = next((a for d in [*clip_dirs, path.parent]
                          if name and (a := find_audio(d, name)) is not None), None)
            if label is None or audio is None:
                if label is not None:
                    log.warning("%s: clip %s of event %s not found in %s", path,
                                name or "(none)", rec.get("id"),
                                ", ".join(map(str, [*clip_dirs, path.parent])))
                counts["skipped"] += 1
                continue
            try:
                wave, variants = cache.load(audio)
            except ListenerError as err:
                problems.append(LabelProblem(str(audio), None, str(err).splitlines()[0]))
                counts["skipped"] += 1
                continue
            out.append(Recording(audio, label, wave, "reviews", variants))
            counts["yes" if label else "no"] += 1
    return out, counts, problems
