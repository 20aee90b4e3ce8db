"""Labelled audio in the formats people use, read into one shape.

Four sources, each documented by its tool:

* **clip folders**: ``DATA/<class>/<file>``; the folder name is the label
  (``calls``/``nocalls``, ``calls``/``background``, or any names mapped by
  :data:`POSITIVE_CLASSES` / :data:`NEGATIVE_CLASSES`);
* **Raven Pro selection tables** (``*.selections.txt``): tab-separated, a
  header row naming ``Selection``, ``View``, ``Channel``, ``Begin Time (s)``,
  ``End Time (s)``, ``Low Freq (Hz)``, ``High Freq (Hz)`` and any annotation
  columns (which one holds the label: :mod:`listener.quality.raven_columns`);
  the recording is the ``Begin Path``/``Begin File`` column or the
  audio file whose name the table's starts with;
* **Audacity label tracks** (``*.txt``): ``start<TAB>end<TAB>label`` lines in
  seconds, each optionally followed by a ``\\<TAB>low<TAB>high`` frequency line;
  the recording is the audio file with the same stem;
* **OrcaHello moderator records** (``*.json``): one detection record (or a
  list) with ``audioUri``, a moderator verdict ``SRKWFound`` (yes/no/don't
  know) or ``state`` (Positive/Negative/...), ``tags``, ``location`` and
  ``predictions``; the audio is the ``audioUri``'s file name next to the JSON
  (nothing is downloaded).

Selections mark calls in long recordings: a selection whose annotation is in
:data:`NEGATIVE_CLASSES` marks a stretch without calls; any other selection
marks a call; time outside every selection is taken as "no call". How
overlapping selections combine: :mod:`listener.quality.selections`.

Bad entries become :class:`LabelProblem` records (file, line, what is wrong)
and are skipped; the rest is still read.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from listener.errors import ListenerError
from listener.quality.raven_columns import ANNOTATION_NAMES, annotation_columns
from listener.quality.selections import Selection, add_selection

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".ts", ".aif", ".aiff")
POSITIVE_CLASSES = frozenset({"call", "calls", "orca", "orcas", "srkw", "kw", "killer whale",
                              "killer_whale", "positive", "yes", "true", "1", "whale"})
NEGATIVE_CLASSES = frozenset({"nocall", "nocalls", "no call", "no_call", "background",
                              "noise", "negative", "no", "false", "0", "none"})
_RAVEN_BEGIN = "Begin Time (s)"
_RAVEN_END = "End Time (s)"


class LabelError(ListenerError):
    """Labelled data cannot be read at all (unknown format, empty folder)."""


@dataclass(frozen=True)
class LabelProblem:
    """One bad entry, skipped: ``file:line: message``."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


@dataclass
class LabelledAudio:
    """One recording and what is known about it.

    ``label`` is the whole file's class (clip folders, moderator records)
    or ``None`` when ``selections`` say where the calls are.
    """

    path: Path
    label: bool | None = None
    selections: list[Selection] = field(default_factory=list)
    site: str | None = None
    source: str = ""  # the label file or folder this came from
    kind: str = "clip"  # clip | raven | audacity | orcahello


@dataclass
class LabelSet:
    """Everything read from one DATA argument, plus what had to be skipped."""

    items: list[LabelledAudio] = field(default_factory=list)
    problems: list[LabelProblem] = field(default_factory=list)

    def extend(self, other: LabelSet) -> None:
        self.items.extend(other.items)
        self.problems.extend(other.problems)


def class_of(name: str) -> bool | None:
    """``True``/``False`` for a known positive/negative class name, else ``None``."""
    key = name.strip().lower()
    if key in POSITIVE_CLASSES:
        return True
    if key in NEGATIVE_CLASSES:
        return False
    return None


def is_audio(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES


def read_clip_folder(root: Path, positive: Iterable[str] = (),
                     negative: Iterable[str] = ()) -> LabelSet:
    """``root/<class>/**/<audio>`` -> one labelled file each.

    Args:
        root: the folder holding one sub-folder per class.
        positive, negative: extra class names besides the built-in ones.
    """
    pos = {p.lower() for p in positive}
    neg = {n.lower() for n in negative}
    out = LabelSet()
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        name = sub.name.lower()
        label = True if name in pos else False if name in neg else class_of(name)
        files = sorted(p for p in sub.rglob("*") if is_audio(p))
        if label is None:
            if files:
                out.problems.append(LabelProblem(str(sub), None, f"unknown class folder "
                                    f"{sub.name!r} ({len(files)} files skipped); known: "
                                    "calls/positive ..., nocalls/background ..."))
            continue
        if not files:
            out.problems.append(LabelProblem(str(sub), None, "class folder holds no audio"))
        out.items.extend(LabelledAudio(f, label=label, source=str(sub), kind="clip")
                         for f in files)
    return out


def read_labels(data: Path, positive: Iterable[str] = (),
                negative: Iterable[str] = ()) -> LabelSet:
    """Any supported DATA: a label file, or a folder of class folders and/or label files.

    Raises:
        LabelError: ``data`` does not exist, or holds nothing recognisable.
    """
    if not data.exists():
        raise LabelError(f"{data}: no such file or folder")
    out = LabelSet()
    if data.is_file():
        out.extend(read_label_file(data))
    else:
        out.extend(read_clip_folder(data, positive, negative))
        for f in sorted(p for p in data.iterdir() if p.is_file()):
            if f.suffix.lower() in (".txt", ".json"):
                out.extend(read_label_file(f))
    if not out.items:
        detail = "; ".join(str(p) for p in out.problems[:5])
        raise LabelError(f"{data}: no labelled audio found (expected class folders such as "
                         f"calls/ and nocalls/, Raven or Audacity .txt tables, or OrcaHello "
                         f".json records){': ' + detail if detail else ''}")
    return out


def read_label_file(path: Path) -> LabelSet:
    """One label file, its format told from its content (not its name)."""
    try:
        if path.suffix.lower() == ".json":
            return read_orcahello(path)
        text = path.read_text(encoding="utf-8-sig", errors="strict")
    except (OSError, UnicodeDecodeError) as err:
        return LabelSet(problems=[LabelProblem(str(path), None, f"cannot read: {err}")])
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if _RAVEN_BEGIN in first.split("\t"):
        return read_raven(path, text)
    if _floats(first.split("\t")[:2]) is not None:
        return read_audacity(path, text)
    return LabelSet(problems=[LabelProblem(str(path), 1, "unknown label format: expected a "
                                           "Raven selection table (header with 'Begin Time "
                                           "(s)'), an Audacity label track (start<TAB>end"
                                           "<TAB>label) or OrcaHello .json records")])


def _floats(parts: list[str]) -> tuple[float, ...] | None:
    """Finite numbers, or None: ``float`` also reads nan and inf, which no time is."""
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        return None
    return values if parts and all(map(math.isfinite, values)) else None


def find_audio(folder: Path, name: str) -> Path | None:
    """The audio file ``name`` (a bare file name or a stem) inside ``folder``, never outside.

    Only the last path component of ``name`` is used: label files written on
    another machine hold its absolute paths, and a hostile one may hold ``..``.
    """
    base = Path(name.replace("\\", "/")).name
    if not base or base in (".", ".."):
        return None
    direct = folder / base
    if is_audio(direct):
        return direct
    matches = sorted(p for p in folder.iterdir() if is_audio(p) and p.stem == Path(base).stem)
    return matches[0] if matches else None


def _audio_for_table(path: Path) -> Path | None:
    """Raven names tables ``<audio stem>.Table.1.selections.txt``; Audacity ``<stem>.txt``."""
    candidates = [p for p in path.parent.iterdir()
                  if is_audio(p) and path.name.startswith(p.stem + ".")]
    return max(candidates, key=lambda p: len(p.stem)) if candidates else None


def _add_selection(sels: list[Selection], new: Selection, file: str,
                   problems: list[LabelProblem]) -> None:
    """Add ``new`` unless it is empty or negative (a problem); overlaps combine as
    :func:`listener.quality.selections.add_selection` says."""
    if new.end_s <= new.start_s:
        problems.append(LabelProblem(file, new.line, f"zero-length or reversed selection "
                                     f"{new.start_s:g}..{new.end_s:g} s"))
        return
    if new.start_s < 0:
        problems.append(LabelProblem(file, new.line, f"negative time {new.start_s:g} s"))
        return
    add_selection(sels, new, file)


def read_raven(path: Path, text: str | None = None) -> LabelSet:
    """A Raven Pro selection table (one or several recordings)."""
    text = path.read_text(encoding="utf-8-sig") if text is None else text
    out = LabelSet()
    rows = list(csv.reader(text.splitlines(), delimiter="\t"))
    header = [h.strip() for h in rows[0]] if rows else []
    col = {h: i for i, h in enumerate(header)}
    missing = [h for h in (_RAVEN_BEGIN, _RAVEN_END) if h not in col]
    if missing:
        out.problems.append(LabelProblem(str(path), 1, f"not a Raven selection table: no "
                                         f"{' or '.join(map(repr, missing))} column"))
        return out
    notes = annotation_columns(header)
    if not notes:
        out.problems.append(LabelProblem(str(path), 1, "no annotation column to tell calls "
                                         "from noise (add one named "
                                         f"{', '.join(n.title() for n in ANNOTATION_NAMES)}"
                                         f"); headers: {', '.join(header)}; table skipped"))
        return out
    by_audio: dict[Path, list[Selection]] = {}
    seen: set[tuple[str, str, str, str]] = set()
    default_audio = _audio_for_table(path)
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        cell = {h: (row[i].strip() if i < len(row) else "") for h, i in col.items()}
        times = _floats([cell[_RAVEN_BEGIN], cell[_RAVEN_END]])
        if times is None:
            out.problems.append(LabelProblem(str(path), lineno, f"bad times "
                                f"{cell[_RAVEN_BEGIN]!r}, {cell[_RAVEN_END]!r}"))
            continue
        name = cell.get("Begin Path") or cell.get("Begin File") or ""
        audio = find_audio(path.parent, name) if name else default_audio
        if audio is None:
            out.problems.append(LabelProblem(str(path), lineno, f"audio file "
                                f"{Path(name).name or path.name.split('.')[0] + '.*'} not "
                                f"found in {path.parent}"))
            continue
        # Raven repeats each selection once per view (waveform, spectrogram).
        key = (str(audio), cell.get("Selection", str(lineno)), *cell_times(cell))
        if key in seen:
            continue
        seen.add(key)
        label = next((row[i].strip() for i in notes if i < len(row) and row[i].strip()), "call")
        sel = Selection(times[0], times[1], class_of(label) is not False, label, lineno)
        _add_selection(by_audio.setdefault(audio, []), sel, str(path), out.problems)
    out.items.extend(LabelledAudio(a, None, s, source=str(path), kind="raven")
                     for a, s in by_audio.items())
    return out


def cell_times(cell: dict[str, str]) -> tuple[str, str]:
    return cell[_RAVEN_BEGIN], cell[_RAVEN_END]


def read_audacity(path: Path, text: str | None = None) -> LabelSet:
    """An Audacity label track: ``start<TAB>end<TAB>label`` (+ optional ``\\`` frequency lines)."""
    text = path.read_text(encoding="utf-8-sig") if text is None else text
    out = LabelSet()
    audio = _audio_for_table(path)
    if audio is None:
        out.problems.append(LabelProblem(str(path), None, f"no audio file named "
                                         f"{path.stem}.<wav|flac|mp3...> next to it"))
        return out
    sels: list[Selection] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("\\"):
            continue  # a frequency-range line belongs to the label above it
        parts = line.split("\t")
        times = _floats(parts[:2]) if len(parts) >= 2 else None
        if times is None:
            out.problems.append(LabelProblem(str(path), lineno, f"expected start<TAB>end"
                                             f"<TAB>label in seconds, got {line[:60]!r}"))
            continue
        label = parts[2].strip() if len(parts) > 2 and parts[2].strip() else "call"
        _add_selection(sels, Selection(times[0], times[1], class_of(label) is not False,
                                       label, lineno), str(path), out.problems)
    out.items.append(LabelledAudio(audio, None, sels, source=str(path), kind="audacity"))
    return out


_VERDICTS = {"yes": True, "positive": True, "true": True, "no": False, "negative": False,
             "false": False}


def read_orcahello(path: Path) -> LabelSet:
    """OrcaHello moderator records: a JSON object or a list of them."""
    out = LabelSet()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        out.problems.append(LabelProblem(str(path), getattr(err, "lineno", None),
                                         f"not readable JSON: {err}"))
        return out
    records = doc if isinstance(doc, list) else [doc]
    for n, rec in enumerate(records, start=1):
        where = f"record {n}" if isinstance(doc, list) else "record"
        item = _orcahello_item(path, rec, where, out.problems)
        if item is not None:
            out.items.append(item)
    return out


def _orcahello_item(path: Path, rec: Any, where: str,
                    problems: list[LabelProblem]) -> LabelledAudio | None:
    if not isinstance(rec, dict):
        problems.append(LabelProblem(str(path), None, f"{where}: not a JSON object"))
        return None
    verdict = rec.get("SRKWFound", rec.get("state"))
    label = _VERDICTS.get(str(verdict).strip().lower()) if verdict is not None else None
    if label is None:
        if verdict is None:
            problems.append(LabelProblem(str(path), None, f"{where}: no moderator verdict "
                                         "(SRKWFound or state)"))
        else:  # "don't know", "Unreviewed": not a label, and not an error either
            log.info("%s: %s: verdict %r is not yes/no; skipped", path, where, verdict)
        return None
    uri = str(rec.get("audioUri") or "")
    try:
        name = Path(urlparse(uri).path).name
    except ValueError:  # e.g. "http://[::1/x.wav": an unclosed IPv6 address
        name = ""
    audio = find_audio(path.parent, name) if name else None
    if audio is None:
        problems.append(LabelProblem(str(path), None, f"{where}: audio "
                                     f"{name or '(no usable audioUri)'} "
                                     f"not found in {path.parent}"))
        return None
    location = rec.get("location")
    if not isinstance(location, dict):
        location = {}
    site = location.get("name") or location.get("id") or rec.get("source_guid")
    return LabelledAudio(audio, label, site=str(site) if site else None, source=str(path),
                         kind="orcahello")
