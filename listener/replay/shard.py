"""Sharded replays: (stations x time) split into N disjoint parts, and merged back.

``listener replay --config DIR --from A --to B --out OUT --shard i/N`` cuts
[A, B) into chunks of ``--chunk`` (default 1 day) for every station, numbers
the (station, chunk) parts in order and runs part k when ``k % N == i``: a
Kubernetes Indexed Job passes its completion index. Each part replays in
``OUT/<station>/<from>_<to>/`` (resumable as any replay) and writes
``part.json`` there.

A chunk *owns* the clips that start inside it. Its replay runs one clip
length past its end (so the clip straddling the boundary is scored whole,
from the same audio as an unsharded replay) and the merge keeps each part's
detections that start inside what it owns; the first chunk also owns a clip
that starts before the range and overlaps it, as an unsharded replay does.

``listener replay merge OUT`` reads every ``part.json`` + ``summary.json``
under OUT and checks, per station, that the owned spans tile [A, B) with no
hole and no overlap and that every part is complete, before joining them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from listener.atomic import atomic_write
from listener.detection.rule import ClipResult
from listener.errors import ListenerError
from listener.events.records import iso_utc
from listener.model.backends.base import ModelBackend
from listener.replay.plan import NoArchiveAudio
from listener.replay.summary import ReplaySummary, archive_gap_json
from listener.runtime.models import WindowScorer
from listener.runtime.roster import Shard

if TYPE_CHECKING:
    from listener.replay.runner import Replay

log = logging.getLogger(__name__)

PART_FILE = "part.json"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_chunk(text: str) -> timedelta:
    """``"6h"``, ``"1d"``, ``"900s"`` -> a timedelta (ListenerError naming ``--chunk``)."""
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ListenerError(f"--chunk {text!r}: expected a length such as 900s, 30m, 6h or 1d")
    return timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])


@dataclass(frozen=True)
class ReplayPart:
    """One (station, chunk) of a sharded replay.

    ``owned_*``: the chunk (whose clips this part reports); ``run_*``: what it
    replays (one clip past the chunk, except for the last chunk).
    """

    index: int
    station: str
    config: str
    range_start: datetime
    range_end: datetime
    owned_start: datetime
    owned_end: datetime
    run_start: datetime
    run_end: datetime

    def folder(self, out: Path) -> Path:
        stamp = "%Y%m%dT%H%M%SZ"
        return out / self.station / (f"{self.owned_start.strftime(stamp)}_"
                                     f"{self.owned_end.strftime(stamp)}")

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        for key, value in doc.items():
            if isinstance(value, datetime):
                doc[key] = iso_utc(value)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ReplayPart:
        values = dict(doc)
        for key in ("range_start", "range_end", "owned_start", "owned_end", "run_start",
                    "run_end"):
            values[key] = datetime.fromisoformat(str(values[key]))
        return cls(**values)


def split(stations: Iterable[tuple[str, str]], start: datetime, end: datetime,
          chunk: timedelta, clip: timedelta) -> list[ReplayPart]:
    """Every (station, chunk) part of [start, end), stations by id then time."""
    if end <= start:
        raise ListenerError(f"--to {iso_utc(end)} is not after --from {iso_utc(start)}")
    parts: list[ReplayPart] = []
    for station, config in sorted(stations):
        lo = start
        while lo < end:
            hi = min(lo + chunk, end)
            run_end = end if hi >= end else min(hi + clip, end)
            parts.append(ReplayPart(len(parts), station, config, start, end, lo, hi, lo,
                                    run_end))
            lo = hi
    return parts


def shard_parts(parts: list[ReplayPart], shard: Shard | None) -> list[ReplayPart]:
    """The parts shard ``i/N`` runs: every N-th, from the i-th."""
    return parts if shard is None else [p for p in parts if p.index % shard.count == shard.index]


def owns_clip(part: ReplayPart, utc_start: datetime) -> bool:
    """True when the clip starting at ``utc_start`` is reported by ``part``."""
    first = part.owned_start == part.range_start
    return (first or utc_start >= part.owned_start) and utc_start < part.owned_end


def _owns(part: ReplayPart, clip: ClipResult) -> bool:
    return clip.utc_start is None or owns_clip(part, clip.utc_start)


def write_part(part: ReplayPart, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / PART_FILE,
                 (json.dumps(part.to_json(), indent=1) + "\n").encode("utf-8"))


@dataclass
class MergedReplay:
    """The joined result of a sharded replay (``merged.json``)."""

    range_start: str
    range_end: str
    stations: list[str]
    parts: int
    detections: list[dict[str, Any]]
    audio_s: float
    wall_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def merge(out: Path) -> MergedReplay:
    """Join the parts under ``out``; ListenerError says what is missing, doubled or unfinished."""
    loaded: list[tuple[ReplayPart, ReplaySummary, Path]] = []
    for path in sorted(out.rglob(PART_FILE)):
        try:
            part = ReplayPart.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ListenerError(f"{path}: unreadable part description: {err}") from err
        summary = ReplaySummary.load(path.parent / "summary.json")
        if summary is None or summary.status != "complete":
            state = "no summary" if summary is None else f"status {summary.status}"
            raise ListenerError(f"{path.parent}: part {part.index} ({part.station}) is not "
                                f"complete ({state}); run its shard again")
        loaded.append((part, summary, path.parent))
    if not loaded:
        raise ListenerError(f"{out}: no replay part ({PART_FILE}) under this folder")
    _check_tiling([p for p, _, _ in loaded])
    # Every model's detections, each once (a part reports its own chunk's clips).
    detections: dict[tuple[str, str, str], dict[str, Any]] = {}
    for part, summary, _folder in loaded:
        for det in summary.detections:
            when = datetime.fromisoformat(str(det["utc_start"]))
            if owns_clip(part, when):
                key = (part.station, str(det.get("model", "")), str(det["utc_start"]))
                detections.setdefault(key, {"station": part.station, **det})
    joined = sorted(detections.values(),
                    key=lambda d: (d["station"], d["utc_start"], str(d.get("model", ""))))
    first = loaded[0][0]
    return MergedReplay(iso_utc(first.range_start) or "", iso_utc(first.range_end) or "",
                        sorted({p.station for p, _, _ in loaded}), len(loaded), joined,
                        round(sum(_owned_audio_s(p, s) for p, s, _ in loaded), 3),
                        round(sum(s.wall_s for _, s, _ in loaded), 3))


def _owned_audio_s(part: ReplayPart, summary: ReplaySummary) -> float:
    """The archived audio of the part's own chunk: the chunk less its archive gaps.

    A part replays past its chunk (to finish the clip across the boundary), so
    its own ``audio_s`` counts that overrun too, and the parts' sum would
    exceed the unsharded replay's.
    """
    lo, hi = part.owned_start.timestamp(), part.owned_end.timestamp()
    missing = 0.0
    for gap in summary.archive_gaps:
        try:
            a = datetime.fromisoformat(str(gap["utc_start"])).timestamp()
            b = datetime.fromisoformat(str(gap["utc_end"])).timestamp()
        except (KeyError, TypeError, ValueError):
            continue
        missing += max(0.0, min(b, hi) - max(a, lo))
    return max(0.0, hi - lo - missing)


def _check_tiling(parts: list[ReplayPart]) -> None:
    """Per station, the owned spans must cover the range exactly once."""
    ranges = {(p.range_start, p.range_end) for p in parts}
    if len(ranges) != 1:
        raise ListenerError(f"the parts belong to different ranges: {sorted(ranges)}")
    start, end = ranges.pop()
    by_station: dict[str, list[ReplayPart]] = {}
    for part in parts:
        by_station.setdefault(part.station, []).append(part)
    for station, own in by_station.items():
        own.sort(key=lambda p: p.owned_start)
        cursor = start
        for part in own:
            if part.owned_start < cursor:
                raise ListenerError(f"{station}: {iso_utc(part.owned_start)} .. "
                                    f"{iso_utc(cursor)} is replayed twice")
            if part.owned_start > cursor:
                raise ListenerError(f"{station}: {iso_utc(cursor)} .. "
                                    f"{iso_utc(part.owned_start)} is missing (no part)")
            cursor = part.owned_end
        if cursor != end:
            raise ListenerError(f"{station}: {iso_utc(cursor)} .. {iso_utc(end)} is missing "
                                "(no part)")


def run_parts(parts: list[ReplayPart], out: Path, *, concurrency: int,
              say: Callable[[str], None], scorer: WindowScorer | None = None,
              backends: Mapping[str, ModelBackend] | None = None) -> int:
    """Replay ``parts`` one after another into ``out``; 0 when every one completed.

    A part that fails (bad config, bucket error) is reported and the next one
    runs; the result is then non-zero. ``scorer``, ``backends``: models loaded
    once for every part (tests); None = each part loads its config's.
    """
    from listener.config import load_config
    from listener.replay.runner import EXIT_FAILED, EXIT_INTERRUPTED, Replay

    worst = 0
    for part in parts:
        folder = part.folder(out)
        write_part(part, folder)
        head = (f"part {part.index} {part.station} {iso_utc(part.owned_start)} .. "
                f"{iso_utc(part.owned_end)}")
        try:
            replay = Replay(load_config(part.config), part.run_start, part.run_end,
                            out_dir=folder, concurrency=concurrency, scorer=scorer,
                            owns=functools.partial(_owns, part), backends=backends)
            summary = _run_part(replay)
        except ListenerError as err:
            say(f"{head}: failed: {err}")
            worst = EXIT_FAILED
            continue
        say(f"{head}: {summary.status}, {len(summary.detections)} detection(s) in {folder}")
        if summary.status == "interrupted":
            return EXIT_INTERRUPTED
        if summary.status != "complete":
            worst = EXIT_FAILED
    return worst


def _run_part(replay: Replay) -> ReplaySummary:
    """Run one part; a chunk the archive holds no audio for is a complete part of gaps.

    An unsharded replay reports such time as a gap inside its range, so the part
    must too, or ``merge`` could never join the shards.
    """
    try:
        return asyncio.run(replay.run())
    except NoArchiveAudio as err:
        log.info("%s", err)
        summary = ReplaySummary(
            replay.node, replay.start_utc, replay.end_utc, status="complete",
            gap_s=sum(g.duration_s for g in err.gaps),
            archive_gaps=[archive_gap_json(g) for g in err.gaps], runs=1,
            outputs={"summary": str(replay.summary_path)})
        summary.save(replay.summary_path)
        return summary
