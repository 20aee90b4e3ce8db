"""``listener detect --raven / --audacity``: results in the analysts' own formats.

One selection (label) per clip the decision rule marked as a detection,
spanning its positive seconds (first to last), so Raven Pro or Audacity
opens the recording with the detections already marked. Positive seconds
are ``hop_s`` long units from the clip start.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from listener.config import DetectionConfig
from listener.detection.rule import ClipResult

RAVEN_HEADER = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)",
                "Low Freq (Hz)", "High Freq (Hz)", "Begin File", "Annotation", "Confidence")
LABEL = "call"


def detection_spans(clips: Iterable[ClipResult],
                    det: DetectionConfig) -> list[tuple[float, float, float]]:
    """``(start_s, end_s, confidence)`` of each detected clip's positive seconds."""
    out = []
    for c in clips:
        pos = [s.start_s for s in c.seconds if s.positive]
        if c.detected and pos:
            out.append((c.start_s + min(pos), min(c.start_s + max(pos) + det.hop_s, c.end_s),
                        c.confidence))
    return out


def raven_table(files: list[tuple[str, list[ClipResult]]], det: DetectionConfig,
                high_hz: float = 10000.0) -> str:
    """A Raven Pro selection table (tab-separated, one Spectrogram view row per selection)."""
    rows = ["\t".join(RAVEN_HEADER)]
    n = 0
    for path, clips in files:
        for start, end, conf in detection_spans(clips, det):
            n += 1
            rows.append("\t".join([str(n), "Spectrogram 1", "1", f"{start:.6f}", f"{end:.6f}",
                                   "0.0", f"{high_hz:.1f}", Path(path).name, LABEL,
                                   f"{conf:.1f}"]))
    return "\n".join(rows) + "\n"


def audacity_labels(clips: list[ClipResult], det: DetectionConfig) -> str:
    """An Audacity label track: ``start<TAB>end<TAB>call <confidence>`` per detection."""
    return "".join(f"{s:.6f}\t{e:.6f}\t{LABEL} {c:.1f}\n"
                   for s, e, c in detection_spans(clips, det))
