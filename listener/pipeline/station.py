"""One station's stages, joined in order: segments -> ffmpeg -> windows -> model -> clips.

Three tasks, each owning one stage, so no stage ever waits on a slower one:

* intake: takes segments from the source, fetches them and feeds the
  long-running ffmpeg; restarts it on a discontinuity, a gap or a failure;
* reader (one per decoder): turns decoded audio into windows on the stream's
  grid and hands them to the micro-batcher;
* scorer: takes scored batches, cuts clips, applies the decision rule and
  hands detections to the emitter, then records progress in the state file.

Stopping (``request_stop``): intake ends at its next wait, ffmpeg is flushed,
queued windows are scored, and the consumer ends; clips still open are not
emitted (the state file makes the next start redo them in full).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np

from listener.audio.decode import StreamDecoder
from listener.audio.history import AudioHistory
from listener.audio.reconcile import SegmentReconciler, Verdict
from listener.audio.windows import Window, WindowCutter
from listener.config import Config
from listener.detection.rule import ClipAggregator, ClipResult, WindowScore
from listener.errors import DecodeError, FetchError
from listener.pipeline.batcher import MicroBatcher, WindowBatcher
from listener.pipeline.contracts import (
    ClipHandler,
    ClipProgress,
    PipelineObserver,
    PipelineStats,
    PrepareBatchFn,
    ProgressFn,
    ResumePoint,
    ScoreWavesFn,
    SegmentSource,
)
from listener.pipeline.lane import ModelLane
from listener.pipeline.prepare import prepare_windows
from listener.service.metrics import Metrics
from listener.sources.segments import Gap, Position, Segment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Context:
    """Which stream (and which decoder run) a window came from."""

    stream_key: str
    generation: int


class StationPipeline:
    """Runs one station until its source ends or :meth:`request_stop`."""

    def __init__(self, cfg: Config, prepare: PrepareBatchFn, score_waves: ScoreWavesFn,
                 source: SegmentSource, handler: ClipHandler, metrics: Metrics, *,
                 resume: ResumePoint | None = None, on_progress: ProgressFn | None = None,
                 observer: PipelineObserver | None = None,
                 history: AudioHistory | None = None, ffmpeg_exe: str | None = None,
                 batcher: WindowBatcher[_Tagged] | None = None,
                 lanes: Sequence[ModelLane] = ()) -> None:
        self.cfg = cfg
        self.source = source
        self.handler = handler
        self.metrics = metrics
        self.on_progress = on_progress
        self.observer = observer
        self.history = history
        self.ffmpeg_exe = ffmpeg_exe
        self.lanes = list(lanes)  # the other models, fed the same decoded audio
        det = cfg.detection
        self.prepare = prepare
        # Resampling runs in its own thread, beside the model's, so neither the
        # event loop nor the model waits for it; queued windows then hold
        # 20 kHz mono audio instead of the native rate. ``prepare`` takes all
        # the windows of a decoded block at once (one filter call per rate).
        self._prep_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="resample")
        # A fleet hands in this station's lane of the batcher its stations share.
        self.batcher: WindowBatcher[_Tagged] = batcher if batcher is not None else MicroBatcher(
            _scorer_of(score_waves), batch_size=cfg.model.batch_size,
            max_wait_s=cfg.model.max_batch_wait_s, max_backlog_s=cfg.buffer.max_backlog_s,
            hop_s=det.hop_s, metrics=metrics)
        self.cutter = WindowCutter(det.window_s, det.hop_s)
        self.aggregator = ClipAggregator(det)
        self._decoder: StreamDecoder | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ctx: _Context | None = None
        self._current_key: str | None = None  # stream of the clip being collected
        self._generation = 0
        self._recent: deque[Segment] = deque(maxlen=2000)
        self.reconciler = SegmentReconciler()
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
            self._skip_before[resume.position.stream_key] = resume.clip_end_s
            log.info("resuming %s after segment %d (clips up to %.1f s already emitted)",
                     resume.position.stream_key, resume.position.sequence, resume.clip_end_s)

    def stats(self) -> PipelineStats:
        return PipelineStats(self.segments_fed, self.windows_scored, self.batcher.backlog_s,
                             self.last_segment_mono, self.last_scored_mono,
                             self.last_scored_utc)

    # -- lifecycle ---------------------------------------------------------

    def request_stop(self) -> None:
        """Stop taking segments; what is already in flight is still scored."""
        self.source.stop_event.set()

    async def run(self) -> None:
        """Run until the source ends (then the open clip is decided too) or a stop."""
        consumer = asyncio.create_task(self._consume(), name="score")
        lanes = [asyncio.create_task(lane.consume(), name=f"score-{lane.id}")
                 for lane in self.lanes]
        try:
            await self._intake()
        finally:
            await self._end_decoder()
            self.batcher.close()
            for lane in self.lanes:
                lane.batcher.close()
            await consumer
            await asyncio.gather(*lanes)
        if not self.source.stop_event.is_set():
            # The stream ended by itself (ENDLIST, end of a replay): decide the
            # last, possibly shorter, clip. A stop leaves it for the resume.
            for clip in self.aggregator.flush(self.cutter.position_s):
                if self._current_key is not None:
                    await self._clip(clip, self._current_key)
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
        self._generation += 1
        self._ctx = _Context(seg.stream_key, self._generation)
        origin = None
        if seg.utc_start is not None:
            # UTC of stream offset 0; the configured start-up offset calibrates
            # the node's clock against the audio (docs/sources.md).
            shift = self.cfg.stream.ffmpeg_start_offset_s if self.cfg.stream else 0.0
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
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    # -- reader ------------------------------------------------------------

    async def _read(self, decoder: StreamDecoder, ctx: _Context,
                    utc_origin: datetime | None) -> None:
        skip = self._skip_before.get(ctx.stream_key, float("-inf"))
        started = False
        try:
            while (block := await decoder.read()) is not None:
                if not started:
                    self.cutter.reset(decoder.anchor_s, decoder.sample_rate, utc_origin)
                    for lane in self.lanes:
                        lane.reset(decoder.anchor_s, decoder.sample_rate, utc_origin)
                    self._hold_audio(ctx.stream_key, max(decoder.anchor_s, skip), first=True)
                    started = True
                offset = self.cutter.position_s
                block = self._within_limit(block, offset, decoder.sample_rate, ctx)
                if not block.shape[1]:
                    continue
                seconds = block.shape[1] / decoder.sample_rate
                self.metrics.decoded_seconds.inc(seconds)
                if self.history is not None:
                    self.history.append(offset, block[0], decoder.sample_rate, ctx.stream_key)
                for lane in self.lanes:
                    await lane.push(block, ctx.stream_key, skip)
                windows = [w for w in self.cutter.push(block) if w.start_s >= skip - 1e-6]
                if windows:
                    waves = await asyncio.get_running_loop().run_in_executor(
                        self._prep_pool, self._prepare_all, windows)
                    for w, wave in zip(windows, waves, strict=True):
                        self.batcher.put(_Tagged(replace(w, samples=_NO_SAMPLES), ctx, wave))
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
        before = self.cfg.outputs.clips.before_s if self.cfg.outputs.clips else 0.0
        self.history.hold(stream_key, offset_s - before)
        self._held_key = stream_key

    def _prepare_all(self, windows: list[Window]) -> list[np.ndarray]:
        return prepare_windows(self.prepare, windows)

    def close(self) -> None:
        """Release the worker threads (after :meth:`run` has returned)."""
        self._prep_pool.shutdown(wait=True, cancel_futures=True)
        self.batcher.shutdown()
        for lane in self.lanes:
            lane.close()

    # -- scoring and clips -------------------------------------------------

    async def _consume(self) -> None:
        async for batch, scores in self.batcher.batches():
            for tagged, score in zip(batch, scores, strict=True):
                w, ctx = tagged.window, tagged.ctx
                if ctx.stream_key != self._current_key:
                    if self._current_key is not None:
                        for clip in self.aggregator.flush():
                            await self._clip(clip, self._current_key)
                    self.aggregator = ClipAggregator(self.cfg.detection)
                    self._current_key = ctx.stream_key
                ws = WindowScore(w.start_s, w.end_s, float(score), w.utc)
                self.metrics.scored_seconds.inc(self.cfg.detection.hop_s)
                self.windows_scored += 1
                self.last_scored_mono = time.monotonic()
                self._update_lag(ws)
                if self.observer is not None:
                    self.observer.window_scored(ws.start_s, ws.end_s, ws.utc, ws.score)
                for clip in self.aggregator.add(ws):
                    await self._clip(clip, ctx.stream_key)

    def _update_lag(self, ws: WindowScore) -> None:
        if ws.utc is None:
            return
        end = ws.utc + timedelta(seconds=ws.end_s - ws.start_s)
        self.last_scored_utc = end
        edge = self.source.live_edge_utc or datetime.now(UTC)
        self.metrics.lag_seconds.set(max(0.0, (edge - end).total_seconds()))

    async def _clip(self, clip: ClipResult, stream_key: str) -> None:
        if not clip.windows:
            return
        durable = await self.handler.clip(clip, stream_key)
        self._hold_audio(stream_key, clip.start_s)
        if durable:
            self._report_progress(clip, stream_key)

    def _report_progress(self, clip: ClipResult, stream_key: str) -> None:
        """Clips up to ``clip.end_s`` are done; a resume re-reads from one segment before."""
        segs = [s for s in self._recent if s.stream_key == stream_key]
        if not segs or self.on_progress is None:
            return
        containing = next((s for s in segs if s.offset_s + s.duration_s > clip.end_s), segs[-1])
        resume_seq = max(containing.sequence - 2, segs[0].sequence - 1)
        self.on_progress(ClipProgress(stream_key, resume_seq, clip.end_s))


@dataclass(frozen=True)
class _Tagged:
    """A window (its samples dropped), its stream, and its model-rate waveform."""

    window: Window
    ctx: _Context
    wave: np.ndarray


_NO_SAMPLES = np.zeros(0, dtype=np.float32)


def _scorer_of(score_waves: ScoreWavesFn) -> Callable[[list[_Tagged]], np.ndarray]:
    def run(batch: list[_Tagged]) -> np.ndarray:
        return np.asarray(score_waves(np.stack([t.wave for t in batch])), dtype=np.float64)

    return run
