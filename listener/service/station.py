"""The station builder: one station's parts, built in one forward pass.

``listener run``, ``listener replay`` and ``listener demo`` all build a
station here, in data-flow order and with nothing patched afterwards:

1. the resume state is loaded once: the pipeline gets its resume point, the
   emitter the encounter that was open;
2. the sinks, then the emitter over them (and, for replay, the range filter
   around the emitter);
3. the source (the config's stream, or one handed in by replay);
4. the pipeline, with the handler and a typed progress callback that saves the
   resume state after each clip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from listener import __version__
from listener.audio.history import AudioHistory
from listener.config import Config
from listener.detection.labels import LabelRule
from listener.detection.rule import ClipResult, Encounter
from listener.errors import ListenerError
from listener.events.emitter import Emitter
from listener.events.lanes import AgreeingHandler, Agreement, LaneEmitter, sinks_for_role
from listener.events.sinks import Sink, build_sinks
from listener.model.backends.base import ModelBackend
from listener.pipeline.batcher import WindowBatcher
from listener.pipeline.contracts import (
    ClipHandler,
    ClipProgress,
    PipelineObserver,
    ResumePoint,
    SegmentSource,
)
from listener.pipeline.lane import ModelLane
from listener.pipeline.station import StationPipeline
from listener.service.metrics import Metrics
from listener.service.resume import StateStore, StreamState
from listener.sources.hls import make_source
from listener.sources.http_client import FetchObserver, HttpClient
from listener.sources.segments import Position

log = logging.getLogger(__name__)

# Audio kept for clips beyond the clip and its context: covers scoring latency.
HISTORY_SLACK_S = 120.0


class Preparer(Protocol):
    """The frontend's waveform step: windows of one rate and length -> model-rate mono.

    Row ``i`` is exactly what window ``i`` alone gives (:meth:`Frontend.prepare_batch`).
    """

    def prepare_batch(self, windows: Sequence[np.ndarray], sample_rate: int) -> np.ndarray: ...


class WindowScorer(Protocol):
    """What a station needs of a model (:class:`listener.model.scorer.Scorer`, or a fake)."""

    @property
    def frontend(self) -> Preparer: ...

    @property
    def info(self) -> Mapping[str, Any]: ...

    def score_waves(self, waves: np.ndarray) -> np.ndarray: ...


WrapHandler = Callable[[Emitter], ClipHandler]


@dataclass(frozen=True)
class StationOptions:
    """How ``run``, ``replay`` and ``demo`` differ; the defaults are ``listener run``.

    Attributes:
        source: replaces the config's stream (replay's archive source); its
            owner closes its HTTP client.
        wrap_handler: puts a handler between the pipeline and the emitter
            (replay keeps the clips inside its range and counts them).
        extra_sinks: sinks beyond those the config's ``outputs`` asks for
            (benchmarks time events with one).
        observer: told of each scored window and lost stretch (the console).
        backends: loaded backends of the config's non-primary ``models`` by id
            (tests, benchmarks); a model missing here is loaded from its plan.
        lane_filter: which clips of the non-primary models are emitted (replay
            keeps those inside its range, as ``wrap_handler`` does for the primary).
    """

    source: SegmentSource | None = None
    wrap_handler: WrapHandler | None = None
    extra_sinks: Sequence[Sink] = ()
    observer: PipelineObserver | None = None
    backends: Mapping[str, ModelBackend] | None = None
    lane_filter: Callable[[ClipResult], bool] | None = None


@dataclass(frozen=True)
class Station:
    """One station's parts, as :func:`build_station` wired them."""

    cfg: Config
    pipeline: StationPipeline
    emitter: Emitter
    source: SegmentSource
    client: HttpClient | None  # owned by the station (None when the source was handed in)
    resume_store: StateStore
    lanes: tuple[ModelLane, ...] = ()  # the non-primary models (``models:``)
    agreement: Agreement | None = None
    lane_emitters: tuple[Emitter, ...] = ()


def model_build_info(cfg: Config, info: Mapping[str, Any]) -> dict[str, str]:
    """``listener_build_info``'s labels for a station's primary model (daemon and fleet)."""
    return {"version": __version__, "model_id": cfg.model.model_id,
            "architecture": str(info.get("architecture", "")),
            "device": str(info.get("device", "")), "precision": str(info.get("precision", "")),
            "weights_sha256": str(info.get("sha256") or "")[:16]}


def build_station(cfg: Config, scorer: WindowScorer, metrics: Metrics, *,
                  options: StationOptions | None = None,
                  on_fetch: FetchObserver | None = None,
                  batcher: WindowBatcher[Any] | None = None) -> Station:
    """Build one station's sinks, emitter, source and pipeline (nothing started yet).

    ``batcher``: this station's lane of a batcher shared by a fleet; None = its own.

    Raises:
        ListenerError: a part cannot be built (the config has no stream, a sink
            cannot be made, the state file cannot be read), with its reason.
    """
    options = options or StationOptions()
    if cfg.stream is None and options.source is None:
        raise ListenerError(f"station {cfg.station.id}: the config has no 'stream' section; "
                            "`listener run` needs one (see config/example.yaml)")
    store = StateStore(cfg.state.dir, cfg.station.id)
    saved = store.load()
    history = _history(cfg)
    sinks = [*build_sinks(cfg.outputs, cfg.station, history, metrics, state_dir=cfg.state.dir),
             *options.extra_sinks]
    model_info = {"id": cfg.model.model_id, **scorer.info}
    if cfg.models is not None and len(cfg.models) > 1:
        model_info["role"] = "primary"
    emitter = Emitter(cfg, model_info, sinks, metrics, _saved_encounter(saved))
    handler: ClipHandler = (emitter if options.wrap_handler is None
                            else options.wrap_handler(emitter))
    lanes, agreement = _lanes(cfg, sinks, metrics, options, saved)
    lane_emitters = tuple(lane.handler.emitter for lane in lanes
                          if isinstance(lane.handler, LaneEmitter))
    if agreement is not None:
        handler = AgreeingHandler(handler, agreement, cfg.model.model_id,
                                  options.lane_filter)
    client = None
    source = options.source
    if source is None:
        assert cfg.stream is not None
        client = HttpClient(cfg.stream.fetch, on_result=on_fetch)
        source = make_source(cfg.stream, client)

    def save_progress(progress: ClipProgress) -> None:
        encounter = emitter.open_encounter
        # The other models' open encounters too, so a restart continues them.
        open_lanes = {str(e.model_info.get("id")): e.open_encounter.to_dict()
                      for e in lane_emitters if e.open_encounter is not None}
        state = StreamState(progress.stream_key, progress.resume_sequence, progress.clip_end_s,
                            encounter.to_dict() if encounter is not None else None,
                            {LANE_ENCOUNTERS: open_lanes} if open_lanes else {})
        try:
            store.save(state)
        except OSError as err:
            log.error("cannot save the state file %s: %s", store.path, err)

    pipeline = StationPipeline(
        cfg, scorer.frontend.prepare_batch, scorer.score_waves, source, handler, metrics,
        resume=_resume_point(saved), on_progress=save_progress, history=history,
        batcher=batcher, observer=options.observer, lanes=lanes)
    return Station(cfg, pipeline, emitter, source, client, store, tuple(lanes), agreement,
                   lane_emitters)


def load_lane_backends(cfg: Config, given: Mapping[str, ModelBackend] | None = None,
                       loaded: dict[str, ModelBackend] | None = None) -> dict[str, ModelBackend]:
    """The backends of the station's non-primary models, loaded (``given`` ones kept).

    Loading a transformers model takes seconds: callers run this in a thread
    before :func:`build_station`, so probes keep answering meanwhile.
    ``loaded`` is a fleet's cache: a model configured alike for several
    stations is loaded once and shared (inference holds no per-call state),
    instead of one copy of a large classifier per station.
    """
    backends = dict(given or {})
    if cfg.models is None or len(cfg.models) < 2:
        return backends
    from listener.model.backends import load_backend
    from listener.model.backends.check import plan_models

    cache = {} if loaded is None else loaded
    for plan in plan_models(cfg):
        if plan.role == "primary" or plan.id in backends:
            continue
        key = f"{plan.entry.model_dump_json()}|{cfg.frontend.model_dump_json()}"
        if key in cache:
            log.info("station %s: model %s shares the copy already loaded", cfg.station.id,
                     plan.id)
        else:
            cache[key] = load_backend(plan, cfg.frontend)
        backends[plan.id] = cache[key]
    return backends


#: The state file's ``extra`` key for the non-primary models' open encounters.
LANE_ENCOUNTERS = "lane_encounters"


def _lanes(cfg: Config, sinks: Sequence[Sink], metrics: Metrics, options: StationOptions,
           saved: StreamState | None) -> tuple[list[ModelLane], Agreement | None]:
    """One lane per non-primary model, each with its role's sinks; none for one model."""
    if cfg.models is None or len(cfg.models) < 2:
        return [], None
    from listener.model.backends.check import plan_models

    plans = sorted(plan_models(cfg), key=lambda p: p.role != "primary")
    backends = load_lane_backends(cfg, options.backends)  # those given, else loaded here
    jsonl = cfg.outputs.jsonl
    path = jsonl.path.with_name(jsonl.path.stem + ".agreement.jsonl") if jsonl else None
    agreement = Agreement(cfg.station.id, [p.id for p in plans], metrics, path)
    lanes = []
    for plan in plans[1:]:
        backend = backends[plan.id]
        info = {"id": plan.id, "role": plan.role, "backend": plan.backend, **backend.info}
        rule = LabelRule(plan.labels, plan.targets, plan.rule, plan.window_s, plan.hop_s,
                         cfg.detection.clip_s)
        lane_cfg = cfg.model_copy(update={"detection": rule.detection})
        emitter = Emitter(lane_cfg, info, sinks_for_role(plan.role, sinks), metrics,
                          _saved_encounter(saved, plan.id), role=plan.role)
        lanes.append(ModelLane(plan, backend, LaneEmitter(emitter, agreement, options.lane_filter),
                               clip_s=cfg.detection.clip_s,
                               max_backlog_s=cfg.buffer.max_backlog_s))
        log.info("station %s: model %s (%s, %s) scores the same audio as %s", cfg.station.id,
                 plan.id, plan.backend, plan.role, plans[0].id)
    return lanes, agreement


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
    return ResumePoint(Position(saved.stream_key, saved.resume_sequence), saved.clip_end_s)


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
    sinks again (a disk that was full), end an encounter left open by a stalled stream."""
    slack = station.cfg.stream.stale_after_s if station.cfg.stream else 120.0
    for emitter in (station.emitter, *station.lane_emitters):
        await emitter.retry_pending()
        await emitter.expire(time.time(), slack)
