"""A station's own unlabelled audio as mixing beds and negatives (``listener train --background``).

Such audio is mostly the site's noise (its hydrophone, its boats, its local
squeak) but can hold a rare call. So it is cut into windows, the starting
model scores each, and windows it scores above ``max_score`` are left out
(and counted in the model card); the rest become background *sources* named
``site:<folder>``, used both as beds for calls and as negatives.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from listener.config import FrontendConfig
from listener.errors import ListenerError
from listener.model.frontend import Frontend
from listener.quality.labels import AUDIO_SUFFIXES, LabelProblem
from listener.training.cache import AudioCache
from listener.training.data import Recording
from listener.training.validation import score

log = logging.getLogger(__name__)


@dataclass
class SiteCount:
    """What one ``--background`` folder gave."""

    folder: str
    files: int = 0
    windows: int = 0
    left_out: int = 0
    seconds_kept: float = 0.0
    max_score: float = 0.9
    problems: list[LabelProblem] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"folder": self.folder, "files": self.files, "windows": self.windows,
                "left_out": self.left_out, "seconds_kept": round(self.seconds_kept, 1),
                "max_score": self.max_score}


def audio_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ListenerError(f"--background {folder}: not a folder")
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def kept_runs(scores: np.ndarray, max_score: float) -> list[tuple[int, int]]:
    """``[start, stop)`` window index runs whose every score is at most ``max_score``."""
    runs, start = [], None
    for i, s in enumerate([*scores.tolist(), np.inf]):
        if s <= max_score and start is None:
            start = i
        elif s > max_score and start is not None:
            runs.append((start, i))
            start = None
    return runs


def load_site_audio(folder: Path, cache: AudioCache, model: torch.nn.Module,
                    frontend_cfg: FrontendConfig, window_s: float, max_score: float,
                    device: torch.device | None = None) -> tuple[list[Recording], SiteCount]:
    """Screen every audio file under ``folder``; keep the runs of low-scoring windows."""
    device = device or torch.device("cpu")
    frontend = Frontend(frontend_cfg).to(device)
    model = model.to(device)
    n = round(window_s * frontend_cfg.sample_rate)
    count = SiteCount(str(folder), max_score=max_score)
    out: list[Recording] = []
    source = f"site:{folder.name or folder.resolve().name}"
    for path in audio_files(folder):
        try:
            clean, variants = cache.load(path)
        except ListenerError as err:
            count.problems.append(LabelProblem(str(path), None, str(err).splitlines()[0]))
            continue
        k = -(-clean.size // n)  # the last, partial window is scored padded
        if k == 0:
            continue
        padded = np.pad(clean.astype(np.float32), (0, k * n - clean.size))
        scores = score(model, frontend, padded.reshape(k, n), device)
        count.files += 1
        count.windows += k
        count.left_out += int(np.sum(scores > max_score))
        for a, b in kept_runs(scores, max_score):
            lo, hi = a * n, min(b * n, clean.size)
            out.append(Recording(path, False, clean[lo:hi], source,
                                 [v[lo:hi] for v in variants]))
            count.seconds_kept += (hi - lo) / frontend_cfg.sample_rate
    log.info("%s: %d windows of %d files, %d above %.2f left out", folder, count.windows,
             count.files, count.left_out, max_score)
    return out, count
