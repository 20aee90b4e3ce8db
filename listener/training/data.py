"""Training audio: decode labelled files once, split them by file, cut 2 s examples.

Audio goes through the daemon's own decoder (ffmpeg) and
:meth:`~listener.model.frontend.Frontend.prepare` (downmix, resample to
20 kHz), so training sees what inference sees. A whole file is resampled at
once here while the daemon resamples each window; the two differ only within
a few samples of a window's edges.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from listener.audio.decode import FileDecoder
from listener.errors import ListenerError
from listener.model.frontend import Frontend
from listener.quality.labels import LabelProblem, LabelSet

log = logging.getLogger(__name__)


@dataclass
class Recording:
    """One decoded file: mono float32 at the frontend's rate, and its class."""

    path: Path
    positive: bool
    wave: np.ndarray

    @property
    def group(self) -> str:
        """The unit of the train/validation split: the source file."""
        return str(self.path)


def decode_mono(path: Path, frontend: Frontend) -> np.ndarray:
    """A whole file -> ``(samples,)`` float32 at ``frontend.cfg.sample_rate``."""
    decoder = FileDecoder(path)
    blocks = list(decoder)
    if not blocks:
        return np.zeros(0, dtype=np.float32)
    return frontend.prepare(np.concatenate(blocks, axis=1), decoder.sample_rate)


def load_recordings(labels: LabelSet, frontend: Frontend,
                    min_s: float = 0.25) -> tuple[list[Recording], list[LabelProblem]]:
    """Decode every whole-file-labelled item; undecodable or tiny files become problems."""
    out: list[Recording] = []
    problems: list[LabelProblem] = []
    rate = frontend.cfg.sample_rate
    for item in labels.items:
        if item.label is None:
            problems.append(LabelProblem(str(item.path), None, "training uses whole-file "
                                         "labels (clip folders); selections are skipped"))
            continue
        try:
            wave = decode_mono(item.path, frontend)
        except ListenerError as err:
            problems.append(LabelProblem(str(item.path), None, str(err).splitlines()[0]))
            continue
        if wave.size < min_s * rate:
            problems.append(LabelProblem(str(item.path), None,
                                         f"only {wave.size / rate:.3f} s of audio"))
            continue
        out.append(Recording(item.path, item.label, wave))
    return out, problems


def split_by_file(recordings: list[Recording], val_fraction: float,
                  seed: int) -> tuple[list[Recording], list[Recording]]:
    """Hold out whole files, the same fraction of each class (at least one each).

    Never by window: windows of one file share its recording conditions, so a
    window-level split would let the model be graded on audio it trained on.
    """
    rng = np.random.default_rng(seed)
    train: list[Recording] = []
    val: list[Recording] = []
    for positive in (True, False):
        group = sorted((r for r in recordings if r.positive == positive), key=lambda r: r.group)
        if not group:
            raise ListenerError(f"no {'call' if positive else 'background'} files to train on "
                                "(need both classes)")
        order = rng.permutation(len(group))
        n_val = max(1, round(val_fraction * len(group))) if len(group) > 1 else 0
        val.extend(group[i] for i in order[:n_val])
        train.extend(group[i] for i in order[n_val:])
    return train, val
