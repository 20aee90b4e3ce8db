"""One station's stages, joined in order: segments -> ffmpeg -> windows -> model -> clips.

Three tasks, each owning one stage, so no stage ever waits on a slower one:

* intake: takes segments from the source, fetches them and feeds the
  long-running ffmpeg; restarts it on a discontinuity, a gap or a failure;
* reader (one per decoder): hands each decoded block to every model lane
  (:class:`~listener.pipeline.lane.ModelLane`, the primary first), which cuts
  its windows on the stream's grid and queues them in the model's batcher;
* one consumer per lane: takes scored batches, cuts clips, applies that
  model's rule and hands clips to its emitter; the station's resume point
  (:func:`~listener.pipeline.lane.resume_ends`) moves as the models' clips become durable.

Stopping (``request_stop``): intake ends at its next wait, ffmpeg is flushed,
queued windows are scored, and the consumer ends; clips still open are not
emitted (the state file makes the next start redo them in full).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from listener.audio.decode import StreamDecoder
from listener.audio.history import AudioHistory
from listener.audio.level import LevelMeter, LevelWatch
from listener.audio.reconcile import SegmentReconciler, Verdict
from listener.audio.windows import zero_nonfinite
from listener.detection.labels import LabelledWindow
from listener.errors import DecodeError, FetchError
from listener.metrics import Metrics
from listener.pipeline.contracts import (
    ClipProgress,
    PipelineObserver,
    PipelineSettings,
    PipelineStats,
    ProgressFn,
    ResumePoint,
    SegmentSource,
)
from listener.pipeline.lane import ModelLane, resume_ends
from listener.sources.segments import Gap, Position, Segment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Context:
    """Which stream (and which decoder run) a block came from."""

    stream_key: str
    generation: int


class StationPipeline:
    """Runs one station until its source ends or :meth:`request_stop`.

    ``lanes``: every model of the station, the primary first; the primary's
    windows drive the station's metrics, console and live-edge lag.
    """

    def __init__(self, settings: PipelineSettings, source: SegmentSource,
                 lanes: Sequence[ModelLane], metrics: Metrics, *,
                 resume: ResumePoint | None = None, on_progress: ProgressFn | None = None,
                 observer: PipelineObserver | None = None,
                 history: AudioHistory | None = None, ffmpeg_exe: str | None = None,
                 level_watch: LevelWatch | None = None) -> None:
        if not lanes:
            raise ValueError("a station pipeline needs at least one model lane")
        self.settings = settings
        self.source = source
        self.metrics = metrics
        self.on_progress = on_progress
        self.observer = observer
        self.history = history
        self.ffmpeg_exe = ffmpeg_exe
        self.lanes = list(lanes)
        self.primary = self.lanes[0]
        self.primary.on_window = self._primary_window
        for lane in self.lanes:
            lane.on_progress = self._lane_progress
        self._decoder: StreamDecoder | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ctx: _Context | None = None
        self._generation = 0
        self._recent: deque[Segment] = deque(maxlen=2000)
        self.reconciler = SegmentReconciler()
        self.level = LevelMeter()
        self.level_watch = level_watch
        self._limits: dict[int, float] = {}  # decoder generation -> end of its audio
        self._held_key: str | None = None
        self._skip_before: dict[str, float] = {}
        self._resume: Position | None = None
        self.last_segment_mono: float | None = None
        self.last_scored_mono: float | None = None
        self.last_scored_utc: datetime | None = None
        self.segments_fed = 0
        self.windows_scored = 0
        if resume is not None:
            self._resume = resume.position
            key = resume.position.stream_key
            self._skip_before[key] = resume.clip_end_s
            for lane in self.lanes:
                lane.skip_before[key] = max(resume.clip_end_s,
                                            resume.lane_clip_end_s.get(lane.id, 0.0))
            log.info("resuming %s after segment %d (clips up to %.1f s already emitted)",
                     key, resume.position.sequence, resume.clip_end_s)

    async def decide_stalled(self, idle_s: float) -> int:
        """Decide every model's open clip early if the stream has stalled in it for
        ``idle_s`` seconds (:meth:`ModelLane.decide_stalled`); the clips decided.

        The models stalled on one stream cut their clips at the same offset (the
        latest of their last windows), so their clips, and the rests after them,
        share starts and pair in the agreement counts. A model still scoring is
        not waited for: it decides at a later check, at its own cut.
        """
        cuts: dict[str, float] = {}
        stalled = []
        for lane in self.lanes:
            end = lane.stalled_end(idle_s)
            if end is not None and lane.stream_key is not None:
                cuts[lane.stream_key] = max(end, cuts.get(lane.stream_key, end))
                stalled.append((lane, lane.stream_key))
        return sum([await lane.decide_stalled(idle_s, cuts[key]) for lane, key in stalled])

    def stats(self) -> PipelineStats:
        outside = self.level_watch.outside() if self.level_watch is not None else ()
        return PipelineStats(self.segments_fed, self.windows_scored, self.primary.batcher.backlog_s,
                             self.last_segment_mono, self.last_scored_mono,
                             self.last_scored_utc, outside)

    # -- lifecycle ---------------------------------------------------------

    def request_stop(self) -> None:
        """Stop taking segments; what is already in flight is still scored."""
        self.source.stop_event.set()

    async def run(self) -> None:
        """Run until the source ends (then the open clips are decided too) or a stop."""
        consumers = [asyncio.create_task(lane.consume(), name=f"score-{lane.id}")
                     for lane in self.lanes]
        intake = asyncio.create_task(self._intake(), name="intake")
        try:
            await asyncio.wait([intake, *consumers], return_when=asyncio.FIRST_COMPLETED)
        finally:
            # A consumer ends before intake only when its model failed: audio fed
            # on would never be scored, so the station stops and its supervisor
            # rebuilds it (docs/daemon.md).
            early = [lane.id for lane, c in zip(self.lanes, consumers, strict=True) if c.done()]
            intake.cancel()
            stopped = (await asyncio.gather(intake, return_exceptions=True))[0]
            await self._end_decoder()
            for lane in self.lanes:
                lane.batcher.close()
            results = await asyncio.gather(*consumers, return_exceptions=True)
        if isinstance(stopped, Exception):
            raise stopped
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        if isinstance(stopped, asyncio.CancelledError):
            raise RuntimeError(f"model {early} stopped scoring before its stream ended")
        if not self.source.stop_event.is_set():
            # The stream ended by itself (ENDLIST, end of a replay): decide the
            # last, possibly shorter, clip of every model. A stop leaves them
            # for the resume.
            for lane in self.lanes:
                await lane.finish()

    # -- intake ------------------------------------------------------------

    async def _intake(self) -> None:
        try:
            async for item in self.source.segments(self._resume):
                if isinstance(item, Gap):
                    await self._gap(item)
                    continue
                data = await self.source.fetch_or_gap(item)
                if isinstance(data, Gap):
                    self.metrics.segments_failed.inc()
                    await self._gap(data)
                    continue
                await self._feed(item, data)
        except FetchError as err:
            log.info("intake stopped during a fetch (%s); it is fetched again on resume", err)

    async def _gap(self, gap: Gap) -> None:
        self.metrics.gaps.inc()
        if gap.duration_s:
            self.metrics.drop("gap", gap.duration_s)
        if self.observer is not None:
            self.observer.audio_lost("gap", gap.utc_start, gap.duration_s)
        log.warning("gap in %s: segments %d..%d (%s)%s", gap.stream_key, gap.from_sequence,
                    gap.to_sequence, gap.reason, f" {gap.url}" if gap.url else "")
        # A gap reported late in a folder left behind leaves the current audio alone.
        if self._decoder is not None and (self._ctx is None
                                          or gap.stream_key == self._ctx.stream_key):
            await self._end_decoder()
            self.metrics.decoder_restart("gap")

    async def _feed(self, seg: Segment, data: bytes) -> None:
        verdict = self.reconciler.check(seg, data)
        if verdict.problem is not None:
            self._report_mismatch(seg, verdict)
        if not verdict.feed:
            await self._end_decoder(reason="reanchor")
            return
        restart_reason = verdict.restart
        if self._decoder is None:
            restart_reason = "start"
        elif seg.discontinuity or self._ctx is None or seg.stream_key != self._ctx.stream_key:
            restart_reason = "discontinuity"
        if restart_reason:
            await self._end_decoder()
            await self._start_decoder(seg)
            self.metrics.decoder_restart(restart_reason)
        assert self._decoder is not None and self._ctx is not None
        if verdict.limit_s is not None:
            self._limits[self._ctx.generation] = verdict.limit_s
        try:
            await self._decoder.feed(data)
        except DecodeError as err:
            log.warning("decoder failed on segment %d of %s (%s); its %.3f s are lost: %s",
                        seg.sequence, seg.stream_key, seg.url, seg.duration_s, err)
            self.metrics.decoder_restart("failure")
            self.metrics.drop("decode_error", seg.duration_s)
            self.metrics.segments_failed.inc()
            if self.observer is not None:
                self.observer.audio_lost("decode_error", seg.utc_start, seg.duration_s)
            await self._end_decoder()
            return
        if verdict.end_after:
            await self._end_decoder(reason="reanchor")
        self._recent.append(seg)
        self.segments_fed += 1
        self.last_segment_mono = time.monotonic()
        self.metrics.segments_fetched.inc()
        end = seg.utc_end
        if end is not None:
            self.metrics.last_segment_timestamp.set(end.timestamp())

    async def _start_decoder(self, seg: Segment) -> None:
        # The previous run's reader has ended (_end_decoder waited): its limit goes.
        self._limits.clear()
        self._generation += 1
        self._ctx = _Context(seg.stream_key, self._generation)
        origin = None
        if seg.utc_start is not None:
            # UTC of stream offset 0; the configured start-up offset calibrates
            # the node's clock against the audio (docs/sources.md).
            shift = self.settings.start_offset_s
            origin = seg.utc_start - timedelta(seconds=seg.offset_s - shift)
        decoder = StreamDecoder(f"{seg.stream_key}@{seg.sequence}", anchor_s=seg.offset_s,
                                ffmpeg_exe=self.ffmpeg_exe)
        await decoder.start()
        self._decoder = decoder
        self._reader = asyncio.create_task(self._read(decoder, self._ctx, origin),
                                           name=f"decode-{self._generation}")

    def _report_mismatch(self, seg: Segment, verdict: Verdict) -> None:
        assert verdict.reason is not None
        log.warning("segment %d of %s (%s) %s", seg.sequence, seg.stream_key, seg.url,
                    verdict.problem)
        if verdict.dropped_s > 0:
            self.metrics.drop(verdict.reason, verdict.dropped_s)
        if not verdict.feed:
            self.metrics.segments_failed.inc()

    async def _end_decoder(self, reason: str | None = None) -> None:
        """Close ffmpeg's input and wait until its last audio is cut into windows.

        ``reason``: count it as a decoder restart (the next segment gets a new one).
        """
        decoder, reader = self._decoder, self._reader
        self._decoder = self._reader = None
        self.reconciler.decoder_ended()
        if decoder is None:
            return
        if reason is not None:
            self.metrics.decoder_restart(reason)
        await decoder.close()
        if reader is not None:
            # wait, not await: a cancel of this task (a failed model ends intake)
            # must propagate, not be taken for the reader's own end.
            await asyncio.wait([reader])
            if not reader.cancelled():
                reader.result()  # a reader's failure is intake's

    # -- reader ------------------------------------------------------------

    async def _read(self, decoder: StreamDecoder, ctx: _Context,
                    utc_origin: datetime | None) -> None:
        skip = self._skip_before.get(ctx.stream_key, float("-inf"))
        started = False
        try:
            while (block := await decoder.read()) is not None:
                if not started:
                    for lane in self.lanes:
                        lane.reset(decoder.anchor_s, decoder.sample_rate, utc_origin)
                    self._hold_audio(ctx.stream_key, max(decoder.anchor_s, skip), first=True)
                    started = True
                offset = self.primary.cutter.position_s
                block = self._within_limit(block, offset, decoder.sample_rate, ctx)
                if not block.shape[1]:
                    continue
                seconds = block.shape[1] / decoder.sample_rate
                self.metrics.decoded_seconds.inc(seconds)
                # Before the level meter and history too, not only the cutters.
                block, bad = zero_nonfinite(block)
                if bad:
                    self.metrics.nonfinite_samples.inc(bad)
                level = self.level.update(block, decoder.sample_rate)
                self.metrics.audio_level.set(level)
                if self.level_watch is not None:
                    self.level_watch.update(level, seconds)
                if self.history is not None:
                    self.history.append(offset, block[0], decoder.sample_rate, ctx.stream_key)
                for lane in self.lanes:
                    await lane.push(block, ctx.stream_key)
        except DecodeError as err:
            log.error("decoder output failed: %s", err)
            self.metrics.decoder_restart("failure")

    def _within_limit(self, block: np.ndarray, offset_s: float, rate: int,
                      ctx: _Context) -> np.ndarray:
        """``block`` cut at this decoder run's limit (audio past a segment's listed end)."""
        limit = self._limits.get(ctx.generation)
        if limit is None:
            return block
        keep = max(0, min(block.shape[1], round((limit - offset_s) * rate)))
        return block[:, :keep]

    def _hold_audio(self, stream_key: str, offset_s: float, first: bool = False) -> None:
        """Keep the audio of clips not yet decided (and their context) in the history."""
        if self.history is None or (first and self._held_key == stream_key):
            return
        self.history.hold(stream_key, offset_s - self.settings.clip_before_s)
        self._held_key = stream_key

    def close(self) -> None:
        """Leave the shared batchers (after :meth:`run` has returned)."""
        for lane in self.lanes:
            lane.close()

    # -- scores, clips and progress ----------------------------------------

    def _primary_window(self, w: LabelledWindow, score: float) -> None:
        self.metrics.scored_seconds.inc(self.primary.hop_s)
        self.windows_scored += 1
        self.last_scored_mono = time.monotonic()
        if w.utc is not None:
            end = w.utc + timedelta(seconds=w.end_s - w.start_s)
            self.last_scored_utc = end
            edge = self.source.live_edge_utc or datetime.now(UTC)
            self.metrics.lag_seconds.set(max(0.0, (edge - end).total_seconds()))
        if self.observer is not None:
            self.observer.window_scored(w.start_s, w.end_s, w.utc, score)

    def _lane_progress(self, lane: ModelLane) -> None:
        """A lane decided a clip: hold audio for the next, and move the resume point."""
        key = self.primary.stream_key
        decided = [x.last_decided_start_s for x in self.lanes
                   if x.stream_key == key and x.last_decided_start_s is not None]
        if key is not None and decided:
            # The earliest clip still to be decided by any model keeps its audio
            # (and its context) for the clip files.
            self._hold_audio(key, min(decided))
        done = self.primary.progress
        if done is None or self.on_progress is None:
            return
        ends = resume_ends(done.stream_key, done.clip_end_s,
                           [(x.id, x.progress) for x in self.lanes],
                           self.settings.resume_bound_s)
        clip_end = min(ends.values())
        segs = [s for s in self._recent if s.stream_key == done.stream_key]
        if not segs:
            return
        containing = next((s for s in segs if s.offset_s + s.duration_s > clip_end), segs[-1])
        resume_seq = max(containing.sequence - 2, segs[0].sequence - 1)
        self.on_progress(ClipProgress(done.stream_key, resume_seq, clip_end, ends))
