"""Training audio: decode labelled files once (cached), group them by source, split by file.

Audio is decoded by content through ffmpeg and resampled by the daemon's own
resampler (:mod:`listener.training.cache`), so training sees what inference
sees. A whole file is resampled at once here while the daemon resamples each
window; the two differ only within a few samples of a window's edges.

A file's *source* is the folder that holds it (``calls/ccv/x.wav`` -> ``ccv``):
sampling is balanced across sources, the validation split holds out whole
files of every source, and the card reports figures per source.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from listener.errors import ListenerError
from listener.model.frontend import Frontend
from listener.model.lineage import digest
from listener.quality.labels import LabelProblem, LabelSet
from listener.training.cache import AudioCache

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Recording:
    """One decoded file: mono audio at the frontend's rate, its class and source.

    ``wave`` is the clean audio and ``variants`` its AAC round trips (same
    length), float16 or float32; ``source`` groups files for balancing.
    """

    path: Path
    positive: bool
    wave: np.ndarray
    source: str = ""
    variants: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.source:
            self.source = self.path.parent.name

    @property
    def group(self) -> str:
        """The source file; the split keeps files of identical bytes together
        (:func:`same_content`)."""
        return str(self.path)

    def version(self, rng: np.random.Generator, aac_p: float) -> np.ndarray:
        """The clean audio, or (with probability ``aac_p``) one of its AAC round trips."""
        if self.variants and rng.random() < aac_p:
            return self.variants[int(rng.integers(0, len(self.variants)))]
        return self.wave


def decode_mono(path: Path, frontend: Frontend) -> np.ndarray:
    """A whole file -> ``(samples,)`` float32 at ``frontend.cfg.sample_rate`` (no cache)."""
    clean, _ = AudioCache(None, frontend.cfg.sample_rate, ()).load(path)
    return clean.astype(np.float32)


def load_recordings(labels: LabelSet, frontend: Frontend, min_s: float = 0.25,
                    cache: AudioCache | None = None,
                    ) -> tuple[list[Recording], list[LabelProblem]]:
    """Decode every whole-file-labelled item; undecodable or tiny files become problems."""
    cache = cache or AudioCache(None, frontend.cfg.sample_rate, ())
    out: list[Recording] = []
    problems: list[LabelProblem] = []
    rate = cache.rate
    for item in labels.items:
        if item.label is None:
            problems.append(LabelProblem(str(item.path), None, "training uses whole-file "
                                         "labels (clip folders); selections are skipped"))
            continue
        try:
            wave, variants = cache.load(item.path)
        except ListenerError as err:
            problems.append(LabelProblem(str(item.path), None, str(err).splitlines()[0]))
            continue
        if wave.size < min_s * rate:
            problems.append(LabelProblem(str(item.path), None,
                                         f"only {wave.size / rate:.3f} s of audio"))
            continue
        out.append(Recording(item.path, item.label, wave, variants=variants))
    return out, problems


def same_content(recordings: list[Recording]) -> dict[str, str]:
    """Each recording's group -> the group it is split with: the first (sorted) file with
    the same bytes, itself when it has no twin (a group that is no file: itself).

    A copy under another name would otherwise land on the other side of the
    split and grade the model on audio it trained on.
    """
    first: dict[str, str] = {}
    out: dict[str, str] = {}
    for group in sorted({r.group for r in recordings}):
        path = Path(group)
        out[group] = first.setdefault(digest(path) if path.is_file() else group, group)
        if out[group] != group:
            log.warning("%s has the same bytes as %s: split with it, as one file", group,
                        out[group])
    return out


class NothingHeldOut(ListenerError):
    """A split that leaves one class (``positive``) without a held-out file."""

    def __init__(self, message: str, positive: bool) -> None:
        super().__init__(message)
        self.positive = positive


def split_by_file(recordings: list[Recording], val_fraction: float, seed: int,
                  pinned: frozenset[str] = frozenset(),
                  ) -> tuple[list[Recording], list[Recording]]:
    """Hold out whole files: the same fraction of every (class, source), at least one each.

    Never by window: windows of one file share its recording conditions, so a
    window-level split would let the model be graded on audio it trained on.
    For the same reason files of identical bytes go together, with the first
    of them (:func:`same_content`); the others are not counted as files of
    their source. A source with a single file stays in training (there is
    nothing to hold out without losing it). Deterministic for a seed, whatever
    the file order. Files in ``pinned`` (groups: the starting model trained
    on them) are never held out; a source's held-out files are drawn from the
    others.
    """
    rng = np.random.default_rng(seed)
    twin = same_content(recordings)
    held: set[str] = set()
    for recs in _by_source(recordings):
        # several runs of one file stay together
        files = sorted({r.group for r in recs if twin[r.group] == r.group})
        n_val = max(1, round(val_fraction * len(files))) if len(files) > 1 else 0
        files = [f for f in files if f not in pinned]
        order = rng.permutation(len(files))
        held.update(files[i] for i in order[:n_val])
    train: list[Recording] = []
    val: list[Recording] = []
    for recs in _by_source(recordings):  # the order of the draws above
        val.extend(r for r in recs if twin[r.group] in held)
        train.extend(r for r in recs if twin[r.group] not in held)
    for positive, kind in ((True, "call"), (False, "background")):
        # Without both classes held out, every epoch's ROC-AUC is undefined.
        if not any(r.positive == positive for r in val):
            why = f"every {kind} source has a single file"
            if pinned:
                why += ", or only files the starting model trained on"
            raise NothingHeldOut(f"no {kind} file could be held out for validation ({why}); "
                                 f"give a {kind} source a second file", positive)
    return train, val


def _by_source(recordings: list[Recording]) -> list[list[Recording]]:
    """The recordings of each (class, source): calls first, sources sorted, files in order."""
    out: list[list[Recording]] = []
    for positive in (True, False):
        group = [r for r in recordings if r.positive == positive]
        if not group:
            raise ListenerError(f"no {'call' if positive else 'background'} files to train on "
                                "(need both classes)")
        out += [[r for r in group if r.source == source]
                for source in sorted({r.source for r in group})]
    return out


class SourcePool:
    """Draws files balanced across sources: a source with ``n`` files gets weight ``n ** power``.

    ``power`` 1 draws files uniformly (big sources dominate), 0 draws sources
    uniformly (a one-file source is drawn as often as a hundred-file one).
    """

    def __init__(self, recordings: list[Recording], power: float) -> None:
        self.sources = sorted({r.source for r in recordings})
        self.files = {s: [r for r in recordings if r.source == s] for s in self.sources}
        weights = np.array([len(self.files[s]) ** power for s in self.sources], dtype=np.float64)
        self.p = weights / weights.sum() if weights.size else weights

    def __bool__(self) -> bool:
        return bool(self.sources)

    def draw(self, rng: np.random.Generator) -> Recording:
        source = self.sources[int(rng.choice(len(self.sources), p=self.p))]
        files = self.files[source]
        return files[int(rng.integers(0, len(files)))]

    def shares(self) -> dict[str, float]:
        """Each source's share of the draws (for the card)."""
        return {s: round(float(p), 3) for s, p in zip(self.sources, self.p, strict=True)}
