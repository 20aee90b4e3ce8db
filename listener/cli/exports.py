"""``detect --raven / --audacity``: where the label files go, for one model or several.

One Raven table holds every file (and, with ``--models``, every model, in a
``Model`` column). Audacity wants one label track per recording, so with
several tracks (several files, or several models) ``--audacity`` names a
folder: ``<file stem>.txt``, or ``<file stem>.<model id>.txt`` with
``--models``. A name that looks like a file there is refused up front.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from listener.cli.options import UsageError
from listener.config import DetectionConfig
from listener.detection.rule import ClipResult
from listener.errors import ListenerError
from listener.quality.export import RAVEN_HEADER, detection_spans


@dataclass(frozen=True)
class Track:
    """One recording's detections by one model."""

    file: str
    clips: Sequence[ClipResult]
    det: DetectionConfig
    model: str | None = None  # the model id with --models
    label: Sequence[str | None] = ()  # per clip, the label named (--models)

    def spans(self) -> list[tuple[float, float, float, str]]:
        """``(start_s, end_s, confidence, label)`` per detected clip.

        The clip's positive seconds, first to last; a rule that decides
        without positive seconds (``mean_top_k``) marks the whole clip.
        """
        out: list[tuple[float, float, float, str]] = []
        for k, c in enumerate(self.clips):
            if not c.detected:
                continue
            label = (self.label[k] if k < len(self.label) else None) or "call"
            spans = detection_spans([c], self.det) or [(c.start_s, c.end_s, c.confidence)]
            out.extend((s, e, conf, label) for s, e, conf in spans)
        return out

    @property
    def name(self) -> str:
        stem = Path(self.file).stem
        return f"{stem}.{re.sub(r'[^A-Za-z0-9_.-]', '_', self.model)}" if self.model else stem


def check_audacity_target(out: str | None, tracks: int) -> None:
    """Refuse, before any scoring, ``--audacity FILE`` where a folder is needed."""
    if not out or tracks <= 1:
        return
    path = Path(out)
    if path.is_dir():
        return
    if path.exists() or (path.suffix and not out.endswith(("/", "\\"))):
        raise UsageError(f"--audacity {out}: {tracks} label tracks (one per file and model) "
                         f"need a folder, and {out} is a file name; give a folder, e.g. "
                         f"--audacity {path.with_suffix('')}/ (one <file stem>.txt each)")


def raven_rows(tracks: Sequence[Track]) -> str:
    """A Raven Pro selection table of every track (``Model`` column when tracks name one)."""
    models = any(t.model for t in tracks)
    rows = ["\t".join(RAVEN_HEADER + (("Model",) if models else ()))]
    n = 0
    for t in tracks:
        for start, end, conf, label in t.spans():
            n += 1
            row = [str(n), "Spectrogram 1", "1", f"{start:.6f}", f"{end:.6f}", "0.0",
                   "10000.0", Path(t.file).name, label, f"{conf:.1f}"]
            rows.append("\t".join(row + ([t.model or ""] if models else [])))
    return "\n".join(rows) + "\n"


def write_text(path: Path, text: str) -> None:
    """Write an output file, making its folder; a failure names the file, no traceback."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise ListenerError(f"cannot write {path}: {err.strerror or err}") from err


def write_exports(raven: str | None, audacity: str | None, tracks: Sequence[Track],
                  planned: int) -> list[Path]:
    """Write ``--raven`` and ``--audacity``; the paths written.

    ``planned`` is the number of tracks asked for (failed files included), so
    the same command line always writes a folder, or always a file.
    """
    written = []
    if raven:
        write_text(Path(raven), raven_rows(tracks))
        written.append(Path(raven))
    if audacity:
        out = Path(audacity)
        folder = planned > 1 or out.is_dir() or audacity.endswith(("/", "\\"))
        for t in tracks:
            target = out / f"{t.name}.txt" if folder else out
            write_text(target, "".join(f"{s:.6f}\t{e:.6f}\t{label} {c:.1f}\n"
                                       for s, e, c, label in t.spans()))
            written.append(target)
    return written
