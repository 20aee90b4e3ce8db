"""``listener collect``: a station's own noise from the archive, as FLAC, for ``--background``.

A time range of an Orcasound node is planned from the bucket exactly as
``listener replay`` plans it; its segments are fetched in chunks of about
five minutes, each chunk decoded as one MPEG-TS stream (gapless AAC) and
scored by the configured model through :func:`listener.pipeline.files.score_file`,
the path ``listener detect`` takes. Stretches where every window scores at
most ``max_score`` (no call the model can hear) are written as mono FLAC at
the stream's rate, named ``<node>_<UTC start>.flac``, until ``max_mb`` of
FLAC has been written. The folder then feeds ``listener train --background``.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf

from listener.atomic import atomic_write
from listener.audio.decode import FileDecoder
from listener.config import Config
from listener.errors import FetchError, ListenerError
from listener.model import dsp
from listener.model.frontend import Frontend
from listener.model.scorer import Scorer
from listener.pipeline.files import score_file
from listener.replay.plan import ArchiveSegment, plan_range
from listener.sources.http_client import HttpClient

log = logging.getLogger(__name__)

CHUNK_SEGMENTS = 30  # ~5 min of 10 s segments: bounded memory and temp disk


class FileScorer(Protocol):
    """What scores the audio (:class:`~listener.model.scorer.Scorer`, or a test's fake)."""

    @property
    def frontend(self) -> Frontend: ...

    def score_waves(self, waves: np.ndarray) -> np.ndarray: ...


@dataclass
class CollectSummary:
    files: list[Path] = field(default_factory=list)
    bytes: int = 0
    seconds_kept: float = 0.0
    seconds_scored: float = 0.0
    windows_above: int = 0
    full: bool = False  # stopped at max_mb


def low_runs(starts: np.ndarray, ends: np.ndarray, scores: np.ndarray,
             max_score: float, min_s: float) -> list[tuple[float, float]]:
    """``(start, end)`` stretches covered only by windows scoring at most ``max_score``.

    A window above the bound taints its whole extent, so overlapping windows
    never let a loud stretch through.
    """
    if not scores.size:
        return []
    edges = np.unique(np.r_[starts, ends])
    bad = np.zeros(edges.size - 1, dtype=bool)
    for s, e, v in zip(starts, ends, scores, strict=True):
        if v > max_score:
            bad[(edges[:-1] >= s) & (edges[1:] <= e)] = True
    runs, begin = [], None
    for i, b in enumerate([*bad.tolist(), True]):
        if not b and begin is None:
            begin = edges[i]
        elif b and begin is not None:
            if edges[i] - begin >= min_s:
                runs.append((float(begin), float(edges[i])))
            begin = None
    return runs


def _write_flac(path: Path, audio: np.ndarray, rate: int) -> None:
    sf.write(path, audio, rate, format="FLAC")


def _chunks(segments: list[ArchiveSegment]) -> list[list[ArchiveSegment]]:
    out: list[list[ArchiveSegment]] = []
    for seg in segments:
        if (not out or out[-1][0].stream_key != seg.stream_key or seg.discontinuity
                or len(out[-1]) >= CHUNK_SEGMENTS):
            out.append([])
        out[-1].append(seg)
    return out


def collect(cfg: Config, start: datetime, end: datetime, out: Path, max_mb: float,
            max_score: float = 0.5, min_s: float = 2.0,
            scorer: FileScorer | None = None) -> CollectSummary:
    """Save the low-scoring audio of ``[start, end)`` under ``out`` (at most ``max_mb``).

    ``scorer``: a loaded model (tests); None = load the config's.
    """
    stream = cfg.stream
    if stream is None or stream.kind != "orcasound" or not stream.node:
        raise ListenerError("collect reads an Orcasound archive: the config needs "
                            "'stream: {kind: orcasound, node: ...}'")
    scorer = scorer if scorer is not None else Scorer(cfg.model, cfg.frontend)
    summary = CollectSummary()
    limit = int(max_mb * 2**20)
    out.mkdir(parents=True, exist_ok=True)
    with HttpClient(stream.fetch) as client:
        plan = plan_range(client, stream.base_url, stream.node, start, end)
        for chunk in _chunks(plan.segments):
            with tempfile.TemporaryDirectory(prefix="listener-collect-") as tmp:
                for ts, run in _fetch_runs(client, chunk, Path(tmp)):
                    if summary.full:
                        break
                    _save_chunk(ts, run, cfg, scorer, stream.node, out, limit, max_score,
                                min_s, summary)
            if summary.full:
                break
    return summary


def _fetch_runs(client: HttpClient, chunk: list[ArchiveSegment],
                folder: Path) -> Iterator[tuple[Path, list[ArchiveSegment]]]:
    """The chunk's segments fetched into TS files, one per run of segments the archive has.

    A segment the archive answers 404 for is lost, as a replay counts it: the
    run ends before it and the next starts after it (timed from its own first
    segment), so one hole does not cost the rest of the range.
    """
    run: list[ArchiveSegment] = []
    ts = folder / "run0.ts"
    for i, seg in enumerate(chunk):
        try:
            data = client.get(seg.url, "segment", retry_404=True)
        except FetchError as err:
            if err.status != 404:
                raise
            log.warning("%s: not in the archive (HTTP 404); collecting on after it", seg.url)
            if run:
                yield ts, run
                run = []
            continue
        if not run:
            ts = folder / f"run{i}.ts"
        with ts.open("ab") as fh:
            fh.write(data)
        run.append(seg)
    if run:
        yield ts, run


def _save_chunk(ts: Path, chunk: list[ArchiveSegment], cfg: Config, scorer: FileScorer,
                node: str, out: Path, limit: int, max_score: float, min_s: float,
                summary: CollectSummary) -> None:
    res = score_file(ts, cfg, scorer.score_waves, scorer.frontend)
    w = res.windows
    starts = np.array([x.start_s for x in w])
    ends = np.array([x.end_s for x in w])
    scores = np.array([x.score for x in w])
    summary.windows_above += int(np.sum(scores > max_score))
    warm = sum(s.duration_s for s in chunk if s.warmup)  # priming audio, outside the range
    summary.seconds_scored += max(0.0, res.duration_s - warm)
    runs = [(max(a, warm), b) for a, b in low_runs(starts, ends, scores, max_score, min_s)
            if b - max(a, warm) >= min_s]
    if not runs:
        return
    decoder = FileDecoder(ts)
    audio = dsp.downmix(np.concatenate(list(decoder), axis=1))
    rate = decoder.sample_rate
    t0 = (chunk[0].stream_start_utc or datetime.fromtimestamp(0, UTC)) + timedelta(
        seconds=chunk[0].offset_s)
    for a, b in runs:
        piece = audio[int(a * rate):int(b * rate)]
        when = (t0 + timedelta(seconds=a)).strftime("%Y%m%dT%H%M%S")
        path = out / f"{node}_{when}Z.flac"
        atomic_write(path, functools.partial(_write_flac, audio=piece, rate=rate))
        size = path.stat().st_size
        if summary.bytes + size > limit:
            path.unlink()
            summary.full = True
            return
        summary.bytes += size
        summary.seconds_kept += b - a
        summary.files.append(path)
