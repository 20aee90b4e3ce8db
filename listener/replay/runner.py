"""``listener replay``: score a past time range of an Orcasound node from its archive.

The range is planned from the bucket (:func:`listener.replay.plan.plan_range`),
its segments are fetched ahead by :class:`~listener.replay.source.ReplaySource`
and scored by the live daemon itself (:class:`~listener.runtime.daemon.Daemon` with
that source injected): same decoder, windows, frontend, model, decision rule,
emitter, sinks and state file. What differs from ``listener run``:

- no probes or metrics server, no systemd notifications;
- the work folder (``--out DIR``, else ``<state.dir>/replay/<node>_<from>_<to>``)
  holds the state file (``state/``), ``summary.json`` and, with ``--out``,
  the JSON-lines events (``events.jsonl``), so an interrupted replay resumes
  where it stopped, without rescoring done clips or emitting them twice;
- clips are kept only if they overlap the range (:class:`RangeClips`), and the
  open encounter is closed at the end of the range.

Only ``listener/cli/main.py`` prints: :func:`run_replay` hands its report to a
``say`` callable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from listener.config import Config, JsonlSinkConfig, load_config, with_precision
from listener.detection.rule import ClipResult
from listener.errors import ListenerError
from listener.events.records import iso_utc
from listener.model.backends.base import ModelBackend
from listener.pipeline.contracts import PipelineStats, Progress
from listener.replay.plan import plan_range
from listener.replay.source import ReplaySource, in_range_s
from listener.replay.summary import (
    ClipCallback,
    RangeClips,
    ReplaySummary,
    archive_gap_json,
    lost_segment_json,
)
from listener.runtime.builder import StationOptions
from listener.runtime.daemon import Daemon
from listener.runtime.models import WindowScorer
from listener.runtime.resume import StateStore
from listener.runtime.sdnotify import SystemdNotifier
from listener.sources.http_client import HttpClient

log = logging.getLogger(__name__)

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130  # as a shell reports a Ctrl-C
# requests keeps 10 pooled connections per host; more fetches would reconnect.
MAX_CONCURRENCY = 10
# The source pauses while this much audio waits to be scored: enough to keep
# the model busy, far below the backlog at which the batcher would shed.
PAUSE_BACKLOG_S = 60.0
MIN_SHED_BACKLOG_S = 600.0


def parse_time(value: str, flag: str) -> datetime:
    """An ISO 8601 time with a zone (``Z`` or an offset), as UTC.

    Raises:
        ListenerError: not ISO 8601, or no time zone (naming ``flag``).
    """
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError as err:
        raise ListenerError(f"{flag} {value!r} is not an ISO 8601 time "
                            "(e.g. 2020-07-07T19:30:00Z or 2020-07-07T12:30-07:00)") from err
    if when.tzinfo is None or when.utcoffset() is None:
        raise ListenerError(f"{flag} {value} has no time zone: add Z for UTC or an offset "
                            "such as -07:00 (e.g. 2020-07-07T19:30:00Z)")
    return when.astimezone(UTC)


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def replay_config(cfg: Config, workdir: Path, jsonl: Path | None) -> Config:
    """The config a replay runs with: its own state folder, no probes, no shedding.

    ``jsonl``: where the JSON-lines sink writes instead of the config's path.
    """
    outputs = cfg.outputs
    if jsonl is not None:
        outputs = outputs.model_copy(update={"jsonl": JsonlSinkConfig(path=jsonl)})
    return cfg.model_copy(update={
        "metrics": cfg.metrics.model_copy(update={"enabled": False}),
        "state": cfg.state.model_copy(update={"dir": workdir / "state"}),
        "buffer": cfg.buffer.model_copy(update={
            "max_backlog_s": max(cfg.buffer.max_backlog_s, MIN_SHED_BACKLOG_S)}),
        "outputs": outputs,
    })


class Replay:
    """One replay of [start_utc, end_utc): ``summary = await Replay(...).run()``.

    Args:
        cfg: the station config; its stream must be ``kind: orcasound``.
        out_dir: the work folder (results, state, summary); None = a folder
            under ``state.dir`` named after the node and range.
        concurrency: segment fetches in flight.
        scorer: a loaded scorer (tests, benchmarks); None = load the config's.
        backends: the other models, loaded, by id (tests, benchmarks).
        owns: which clips this replay reports (a sharded replay's part: its chunk's).
        on_clip: called with each clip handed to the sinks.
        progress: a progress display, fed seconds of audio scored.

    Raises:
        ListenerError: not an Orcasound stream, an empty range, a bad concurrency.
    """

    def __init__(self, cfg: Config, start_utc: datetime, end_utc: datetime, *,
                 out_dir: Path | None = None, concurrency: int = 4,
                 scorer: WindowScorer | None = None,
                 allow_random_weights: bool = False, on_clip: ClipCallback | None = None,
                 progress: Progress | None = None,
                 owns: Callable[[ClipResult], bool] | None = None,
                 backends: Mapping[str, ModelBackend] | None = None) -> None:
        stream = cfg.stream
        if stream is None or stream.kind != "orcasound" or not stream.node:
            kind = "no stream section" if stream is None else f"stream kind {stream.kind!r}"
            raise ListenerError(f"station {cfg.station.id}: replay reads the Orcasound archive "
                                f"and needs 'stream: {{kind: orcasound, node: ...}}', "
                                f"got {kind}")
        if start_utc.tzinfo is None or end_utc.tzinfo is None:
            raise ListenerError("replay times need a time zone (naive datetime given)")
        if end_utc <= start_utc:
            raise ListenerError(f"--to {iso_utc(end_utc)} is not after --from "
                                f"{iso_utc(start_utc)}")
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ListenerError(f"--concurrency must be 1..{MAX_CONCURRENCY}, got {concurrency}")
        self.node: str = stream.node
        self.base_url = stream.base_url
        self.start_utc, self.end_utc = start_utc, end_utc
        default = cfg.state.dir / "replay" / f"{self.node}_{_stamp(start_utc)}_{_stamp(end_utc)}"
        self.workdir = Path(out_dir) if out_dir is not None else default
        self.cfg = replay_config(cfg, self.workdir,
                                 self.workdir / "events.jsonl" if out_dir is not None else None)
        self.concurrency = concurrency
        self.scorer = scorer
        self.allow_random_weights = allow_random_weights
        self.on_clip = on_clip
        self.owns = owns
        self.backends = dict(backends or {})
        self.progress = progress
        self.summary_path = self.workdir / "summary.json"
        self.daemon: Daemon | None = None
        self.source: ReplaySource | None = None
        self.clips: RangeClips | None = None
        self.already_complete = False
        self._stop_requested = False

    def request_stop(self, why: str = "requested") -> None:
        """Stop as Ctrl-C does: clips done so far stay done, the state says where."""
        self._stop_requested = True
        if self.daemon is not None:
            self.daemon.request_stop(why)

    def _previous(self) -> ReplaySummary | None:
        """The summary of earlier runs in the work folder, if they can be resumed."""
        prev = ReplaySummary.load(self.summary_path)
        if prev is None:
            return None
        if not prev.same_range(ReplaySummary(self.node, self.start_utc, self.end_utc)):
            raise ListenerError(
                f"{self.workdir} holds the replay of {prev.node} {iso_utc(prev.start_utc)} .. "
                f"{iso_utc(prev.end_utc)}; give another --out (or delete that folder)")
        if not StateStore(self.cfg.state.dir, self.cfg.station.id).path.exists():
            return None  # no clip was emitted yet: nothing to resume or to add up
        return prev

    async def run(self) -> ReplaySummary:
        """Plan, score and report the range; resumes a replay interrupted in the same folder.

        Raises:
            ListenerError: no audio in the range, an unknown node, the model
                or the bucket listing failed (each with its reason).
        """
        started = time.monotonic()
        prev = self._previous()
        if prev is not None and prev.status == "complete":
            self.already_complete = True
            return prev
        summary = ReplaySummary(self.node, self.start_utc, self.end_utc)
        assert self.cfg.stream is not None
        client = HttpClient(self.cfg.stream.fetch)
        try:
            try:
                plan = await asyncio.to_thread(plan_range, client, self.base_url, self.node,
                                               self.start_utc, self.end_utc)
            except ValueError as err:
                raise ListenerError(str(err)) from err
            scorer = self.scorer
            if scorer is None:
                from listener.model.scorer import Scorer

                scorer = await asyncio.to_thread(
                    Scorer, self.cfg.model, self.cfg.frontend,
                    allow_random_weights=self.allow_random_weights)
            if prev is None:
                summary.save(self.summary_path)  # marks the folder as this range's
            source = self.source = ReplaySource(
                plan, client, concurrency=self.concurrency, backlog_s=self._backlog_s,
                max_backlog_s=PAUSE_BACKLOG_S)
            status = await self._score(source, scorer, client)
        finally:
            client.close()
        summary.audio_s, summary.gap_s = plan.audio_s, plan.gap_s
        summary.archive_gaps = [archive_gap_json(g) for g in plan.gaps]
        summary.segments_planned = len(plan.segments)
        summary.segments_fetched = source.fetched
        summary.lost_segments = [lost_segment_json(g) for g in source.lost]
        stats = self._stats()
        summary.windows_scored = stats.windows_scored if stats is not None else 0
        if self.clips is not None:
            summary.clips, summary.clips_outside_range = self.clips.clips, self.clips.outside
            summary.detections = list(self.clips.detections)
        summary.wall_s, summary.runs = time.monotonic() - started, 1
        if prev is not None:
            summary.add_previous(prev)
        lost = {s["url"] for s in summary.lost_segments}
        summary.covered_s = max(prev.covered_s if prev else 0.0, sum(
            in_range_s(s, self.start_utc, self.end_utc)
            for s in plan.segments[:source.done_index] if s.url not in lost))
        summary.status, summary.error = self._outcome(source, status)
        summary.outputs = self._outputs()
        summary.save(self.summary_path)
        return summary

    async def _score(self, source: ReplaySource, scorer: WindowScorer,
                     client: HttpClient) -> int:
        """Run the daemon over the source; its exit status."""
        if self._stop_requested:
            return 0
        self.clips = RangeClips(self.start_utc, self.end_utc, self.on_clip, self.owns)
        daemon = self.daemon = Daemon(
            self.cfg, scorer=scorer, backends=self.backends, registry=CollectorRegistry(),
            options=StationOptions(source=source, wrap_emitter=self.clips.target,
                                   clip_filter=self.clips.keeps, finish_at_end=True,
                                   restart_on_failure=False),
            notifier=SystemdNotifier(environ={}))  # a replay is not the service

        async def stop_client() -> None:
            # Retries of fetches in flight end at once when the replay stops.
            await source.stop_event.wait()
            client.stop()

        helpers = [asyncio.create_task(stop_client(), name="replay-stop")]
        remaining = max(source.plan.audio_s, 1.0)
        if self.progress is not None:
            helpers.append(asyncio.create_task(self._show_progress(self.progress, remaining),
                                               name="replay-progress"))
        try:
            status = await daemon.run()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await source.aclose()
            if self.progress is not None:
                self.progress.close()
        return status

    def _stats(self) -> PipelineStats | None:
        pipeline = self.daemon.pipeline if self.daemon is not None else None
        return pipeline.stats() if pipeline is not None else None

    def _backlog_s(self) -> float:
        stats = self._stats()
        return stats.backlog_s if stats is not None else 0.0

    async def _show_progress(self, bar: Progress, total_s: float) -> None:
        hop = self.cfg.detection.hop_s
        while True:
            await asyncio.sleep(0.5)
            stats = self._stats()
            if stats is not None:
                bar(min(stats.windows_scored * hop, total_s), total_s)

    def _outcome(self, source: ReplaySource, status: int) -> tuple[str, str | None]:
        if source.failure is not None:
            return "failed", f"{source.failure}; run the same command again to resume"
        if status != 0 or (self.daemon is not None and self.daemon.pipeline is None):
            return "failed", "the pipeline failed (see the log above)"
        stopped = self._stop_requested or (self.daemon is not None
                                           and self.daemon.stop_reason is not None)
        if source.finished and not stopped:
            return "complete", None
        return "interrupted", None

    def _outputs(self) -> dict[str, str]:
        out = {"summary": str(self.summary_path), "state": str(self.cfg.state.dir)}
        if self.cfg.outputs.jsonl is not None:
            out["events"] = str(self.cfg.outputs.jsonl.path)
        return out


def _log_line(text: str) -> None:
    log.info("%s", text)


def run_replay(args: argparse.Namespace, say: Callable[[str], None] = _log_line,
               make_progress: Callable[[str], Progress] | None = None) -> int:
    """``listener replay``: the exit status (0 done, 1 failed, 130 interrupted).

    ``args`` has ``config``, ``start``, ``end``, ``out`` and ``concurrency``;
    ``say`` receives the report line by line; ``make_progress(label)`` makes a
    progress display (the CLI passes one only on a terminal).

    Raises:
        ListenerError: a bad time, range, config, node or model (clear message).
    """
    start = parse_time(args.start, "--from")
    end = parse_time(args.end, "--to")
    if end <= start:
        raise ListenerError(f"--to {args.end} is before --from {args.start}"
                            if end < start else f"--to equals --from ({args.start}): "
                            "an empty range")
    cfg = with_precision(load_config(args.config), getattr(args, "precision", None))
    replay = Replay(cfg, start, end, out_dir=Path(args.out) if args.out else None,
                    concurrency=args.concurrency,
                    progress=make_progress("replay") if make_progress else None)
    summary = asyncio.run(replay.run())
    if replay.already_complete:
        say(f"{replay.workdir} already holds this complete replay (delete it to run again)")
    for line in summary.lines():
        say(line)
    if summary.status == "interrupted":
        say("interrupted: run the same command again to resume")
        return EXIT_INTERRUPTED
    return 0 if summary.status == "complete" else EXIT_FAILED
