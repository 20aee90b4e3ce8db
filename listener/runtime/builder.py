"""The station builder: one station's parts, built in one forward pass.

``listener run``, ``listener replay`` and ``listener demo`` all build a
station here, in data-flow order and with nothing patched afterwards:

1. the resume state is loaded once: the pipeline gets its resume point, each
   model's emitter the encounter it had open;
2. the sinks, then one emitter per model over the sinks of its role (and, for
   replay, the range filter around each);
3. the source (the config's stream, or one handed in by replay);
4. one lane per model (the primary first) in that model's shared batcher,
   then the pipeline, with a typed progress callback that saves the resume
   state after each clip.

The models themselves are loaded once per process by the runner
(:mod:`listener.runtime.models`) and handed in as :class:`LoadedModel`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from listener import __version__
from listener.audio.history import AudioHistory
from listener.audio.level import LevelRange, LevelWatch
from listener.config import Config, DetectionConfig
from listener.detection.labels import LabelRule
from listener.detection.rule import ClipResult, Encounter
from listener.errors import ListenerError
from listener.events.emitter import Emitter
from listener.events.lanes import Agreement, ClipTarget, LaneEmitter, sinks_for_role
from listener.events.sinks import Sink, build_sinks
from listener.metrics import Metrics
from listener.model.backends.base import ModelPlan
from listener.pipeline.batcher import SharedBatcher
from listener.pipeline.contracts import (
    ClipProgress,
    PipelineObserver,
    PipelineSettings,
    PrepareBatchFn,
    ResumePoint,
    SegmentSource,
)
from listener.pipeline.lane import ModelLane, Tagged
from listener.pipeline.station import StationPipeline
from listener.runtime.resume import StateStore, StreamState
from listener.sources.hls import make_source
from listener.sources.http_client import FetchObserver, HttpClient
from listener.sources.segments import Position

log = logging.getLogger(__name__)

# Audio kept for clips beyond the clip and its context. Scoring latency needs
# no more: the hold point (the earliest undecided clip of any model) keeps
# audio decoded ahead of scoring, up to buffer.max_backlog_s beyond this.
HISTORY_SLACK_S = 10.0
#: The state file's ``extra`` keys: the other models' open encounters, every model's progress.
LANE_ENCOUNTERS = "lane_encounters"
LANE_PROGRESS = "lane_progress"

WrapEmitter = Callable[[str, Emitter], ClipTarget]


@dataclass(frozen=True)
class LoadedModel:
    """A model loaded once in the process and shared by every station that runs it."""

    plan: ModelPlan
    prepare: PrepareBatchFn
    batcher: SharedBatcher[Tagged]
    info: Mapping[str, Any]
    # The window levels (dBFS) its weights record having trained at; None: not recorded.
    trained_levels_dbfs: tuple[float, float] | None = None


@dataclass(frozen=True)
class StationOptions:
    """How ``run``, ``replay`` and ``demo`` differ; the defaults are ``listener run``.

    Attributes:
        source: replaces the config's stream (replay's archive source); its
            owner closes its HTTP client.
        wrap_emitter: puts a target between each model's lane and its emitter
            (replay keeps the clips inside its range and counts them).
        clip_filter: which clips count for the agreement across models
            (replay: those inside its range, as ``wrap_emitter`` keeps them).
        extra_sinks: sinks beyond those the config's ``outputs`` asks for
            (benchmarks time events with one).
        finish_at_end: the end of the stream is the end of the data (replay,
            demo): every model's open encounter is closed, and the station is
            not restarted.
        restart_on_failure: a failed pipeline is rebuilt after a backoff
            (``listener run``); otherwise the runner exits 1.
        allow_random_weights: a model without weights runs with random ones
            (the demo without a trained model).
    """

    source: SegmentSource | None = None
    wrap_emitter: WrapEmitter | None = None
    clip_filter: Callable[[ClipResult], bool] | None = None
    extra_sinks: Sequence[Sink] = ()
    finish_at_end: bool = False
    restart_on_failure: bool = True
    allow_random_weights: bool = False


@dataclass(frozen=True)
class Station:
    """One station's parts, as :func:`build_station` wired them."""

    cfg: Config
    pipeline: StationPipeline
    emitters: tuple[Emitter, ...]  # one per model, the primary first
    source: SegmentSource
    client: HttpClient | None  # owned by the station (None when the source was handed in)
    resume_store: StateStore
    agreement: Agreement | None = None

    @property
    def emitter(self) -> Emitter:
        """The primary model's emitter."""
        return self.emitters[0]

    @property
    def lane_emitters(self) -> tuple[Emitter, ...]:
        """The other models' emitters."""
        return self.emitters[1:]


def model_build_info(cfg: Config, info: Mapping[str, Any]) -> dict[str, str]:
    """``listener_build_info``'s labels for a station's primary model."""
    return {"version": __version__, "model_id": cfg.model.model_id,
            "architecture": str(info.get("architecture", "")),
            "device": str(info.get("device", "")), "precision": str(info.get("precision", "")),
            "weights_sha256": str(info.get("sha256") or "")[:16]}


def build_station(cfg: Config, models: Sequence[LoadedModel], metrics: Metrics, *,
                  pool: concurrent.futures.Executor, options: StationOptions | None = None,
                  on_fetch: FetchObserver | None = None,
                  observer: PipelineObserver | None = None) -> Station:
    """Build one station's sinks, emitters, source, lanes and pipeline (nothing started).

    ``models``: the station's models as planned, the primary first.

    Raises:
        ListenerError: a part cannot be built (the config has no stream, a sink
            cannot be made, the state file cannot be read), with its reason.
    """
    options = options or StationOptions()
    if cfg.stream is None and options.source is None:
        raise ListenerError("the config has no 'stream' section; `listener run` needs one "
                            "(see config/example.yaml)")
    store = StateStore(cfg.state.dir, cfg.station.id)
    saved = store.load()
    history = _history(cfg)
    sinks = [*build_sinks(cfg.outputs, cfg.station, history, metrics, state_dir=cfg.state.dir),
             *options.extra_sinks]
    agreement = _agreement(cfg, models, metrics)
    emitters, lanes = [], []
    for index, model in enumerate(models):
        emitter, lane = _lane(cfg, index, model, sinks, metrics, options, saved, agreement,
                              pool)
        emitters.append(emitter)
        lanes.append(lane)
    client = None
    source = options.source
    if source is None:
        assert cfg.stream is not None
        client = HttpClient(cfg.stream.fetch, on_result=on_fetch)
        source = make_source(cfg.stream, client)
    pipeline = StationPipeline(
        _settings(cfg), source, lanes, metrics, resume=_resume_point(saved),
        on_progress=_progress_saver(store, emitters), history=history, observer=observer,
        level_watch=_level_watch(cfg.station.id, models, metrics))
    return Station(cfg, pipeline, tuple(emitters), source, client, store, agreement)


def _lane(cfg: Config, index: int, model: LoadedModel, sinks: Sequence[Sink], metrics: Metrics,
          options: StationOptions, saved: StreamState | None, agreement: Agreement | None,
          pool: concurrent.futures.Executor) -> tuple[Emitter, ModelLane]:
    """One model's emitter (over its role's sinks) and lane (in its shared batcher)."""
    plan = model.plan
    rule = LabelRule(plan.labels, plan.targets, plan.rule, plan.window_s, plan.hop_s,
                     cfg.detection.clip_s)
    detection = _model_detection(cfg.detection, rule.detection)
    info: dict[str, Any] = {"id": plan.id, **model.info}
    if index:
        info = {"id": plan.id, "role": plan.role, "backend": plan.backend, **model.info}
    elif cfg.models is not None and len(cfg.models) > 1:
        info["role"] = "primary"
    emitter = Emitter(cfg.station, detection, info, sinks_for_role(plan.role, sinks), metrics,
                      _saved_encounter(saved, None if index == 0 else plan.id), role=plan.role)
    target = emitter if options.wrap_emitter is None else options.wrap_emitter(plan.id, emitter)
    # The primary ResNet's records are OrcaHello's (no labels); every other
    # model names its label, so moderators can tell the models apart.
    handler = LaneEmitter(target, agreement, options.clip_filter,
                          labelled=index > 0 or plan.backend != "orcahello-resnet")
    batch_lane = model.batcher.lane(
        cfg.station.id if index == 0 else f"{cfg.station.id}/{plan.id}",
        max_backlog_s=cfg.buffer.max_backlog_s, hop_s=plan.hop_s,
        metrics=metrics if index == 0 else None)  # station metrics count the primary
    if index:
        log.info("station %s: model %s (%s, %s) scores the same audio", cfg.station.id,
                 plan.id, plan.backend, plan.role)
    return emitter, ModelLane(plan.id, index, rule, model.prepare, batch_lane, handler,
                              pool=pool)


def _level_watch(station: str, models: Sequence[LoadedModel],
                 metrics: Metrics) -> LevelWatch | None:
    """Watches the stream's level against the levels each model trained at."""
    ranges = [LevelRange(m.plan.id, *m.trained_levels_dbfs) for m in models
              if m.trained_levels_dbfs is not None]
    for r in ranges:
        metrics.model_trained_levels(r.model, r.low_dbfs, r.high_dbfs)
    return LevelWatch(station, ranges) if ranges else None


def _model_detection(station: DetectionConfig, model: DetectionConfig) -> DetectionConfig:
    """The station's detection settings with one model's windows and thresholds."""
    return station.model_copy(update={
        "window_s": model.window_s, "hop_s": model.hop_s, "clip_s": model.clip_s,
        "local_threshold": model.local_threshold, "global_threshold": model.global_threshold})


def _agreement(cfg: Config, models: Sequence[LoadedModel], metrics: Metrics
               ) -> Agreement | None:
    if len(models) < 2:
        return None
    jsonl = cfg.outputs.jsonl
    path = jsonl.path.with_name(jsonl.path.stem + ".agreement.jsonl") if jsonl else None
    return Agreement(cfg.station.id, [m.plan.id for m in models], metrics, path)


def _settings(cfg: Config) -> PipelineSettings:
    clips = cfg.outputs.clips
    return PipelineSettings(
        start_offset_s=cfg.stream.ffmpeg_start_offset_s if cfg.stream else 0.0,
        clip_before_s=clips.before_s if clips else 0.0,
        resume_bound_s=cfg.buffer.max_backlog_s)


def _progress_saver(store: StateStore, emitters: Sequence[Emitter]
                    ) -> Callable[[ClipProgress], None]:
    def save(progress: ClipProgress) -> None:
        encounter = emitters[0].open_encounter
        # The other models' open encounters too, so a restart continues them.
        open_lanes = {str(e.model_info.get("id")): e.open_encounter.to_dict()
                      for e in emitters[1:] if e.open_encounter is not None}
        extra: dict[str, Any] = {LANE_ENCOUNTERS: open_lanes} if open_lanes else {}
        if len(emitters) > 1:
            extra[LANE_PROGRESS] = dict(progress.lane_clip_end_s)
        state = StreamState(progress.stream_key, progress.resume_sequence, progress.clip_end_s,
                            encounter.to_dict() if encounter is not None else None, extra)
        try:
            store.save(state)
        except OSError as err:
            log.error("cannot save the state file %s: %s", store.path, err)

    return save


def _history(cfg: Config) -> AudioHistory | None:
    clips = cfg.outputs.clips
    if clips is None:
        return None
    # Audio decoded ahead of scoring (a catch-up, up to buffer.max_backlog_s) is
    # held too, so clips decided late still find their own audio.
    max_s = cfg.detection.clip_s + clips.before_s + clips.after_s + HISTORY_SLACK_S
    return AudioHistory(max_s=max_s, hard_max_s=max_s + cfg.buffer.max_backlog_s)


def _resume_point(saved: StreamState | None) -> ResumePoint | None:
    if saved is None:
        return None
    lanes: dict[str, float] = {}
    try:
        for model_id, end in (saved.extra.get(LANE_PROGRESS) or {}).items():
            lanes[str(model_id)] = float(end)
    except (AttributeError, TypeError, ValueError) as err:
        log.warning("ignoring the saved progress of the other models: %s", err)
        lanes = {}
    return ResumePoint(Position(saved.stream_key, saved.resume_sequence), saved.clip_end_s,
                       lanes)


def _saved_encounter(saved: StreamState | None, model_id: str | None = None
                     ) -> Encounter | None:
    """The open encounter saved for the primary (``model_id`` None) or another model."""
    if saved is None:
        return None
    try:
        doc = saved.encounter if model_id is None else (
            saved.extra.get(LANE_ENCOUNTERS) or {}).get(model_id)
        return Encounter.from_dict(doc) if doc else None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        log.warning("ignoring the saved encounter of %s: %s", model_id or "the primary", err)
        return None


async def tend(station: Station) -> None:
    """Periodic care of a live station (every ~30 s): offer refused records to their
    sinks again (a disk that was full); when the stream has stalled, decide the
    clip it stalled in and end the encounter it left open."""
    stream = station.cfg.stream
    slack = stream.stale_after_s if stream else 120.0
    await station.pipeline.decide_stalled(stream.stalled_clip_after_s if stream else 120.0)
    for emitter in station.emitters:
        await emitter.retry_pending()
        await emitter.expire(time.time(), slack)


async def finish(station: Station) -> None:
    """The end of the data (a replay's range, the demo recording): every model's
    open encounter ends."""
    for emitter in station.emitters:
        await emitter.finish()
