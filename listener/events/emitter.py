"""Clip decisions -> events -> sinks, with encounter tracking and metrics.

A sink that fails is logged and counted and never stops the others or the
pipeline. A *durable* sink (JSON lines, OrcaHello records, the webhook
outbox) that refuses an event (a full disk) gets it again, in order, before
any later event, on every clip and every ``retry_pending`` call; until it
holds every event, :meth:`Emitter.clip` answers False so the pipeline keeps
its resume point before the clip (a restart re-scores it, same event ids).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any

from listener.config import DetectionConfig, StationConfig
from listener.detection.labels import ClipLabels
from listener.detection.rule import (
    ClipResult,
    Encounter,
    EncounterEvent,
    EncounterTracker,
    clip_times,
)
from listener.events.records import Event, make_detection_event, make_encounter_event
from listener.events.sinks import Sink
from listener.events.sinks.base import emit_each
from listener.metrics import Metrics

log = logging.getLogger(__name__)


class Emitter:
    """Turns one model's finished clips into events and hands them to its sinks.

    ``detection``: that model's windows and thresholds (into the records and
    its encounters); ``role``: the model's role (the primary counts the
    station-wide metrics, and every other model's encounters get ids of
    their own).
    """

    def __init__(self, station: StationConfig, detection: DetectionConfig,
                 model_info: dict[str, Any], sinks: Sequence[Sink], metrics: Metrics,
                 encounter: Encounter | None = None, *, role: str = "primary") -> None:
        self.station = station
        self.detection = detection
        # Station-wide detect metrics count the primary model only; every
        # model (the primary too) has its own ``model``-labelled counters.
        self.role = role
        self._model_clips, self._model_detections = metrics.model_counters(
            str(model_info.get("id") or ""), role)
        self.model_info = model_info
        self.sinks = list(sinks)
        self.metrics = metrics
        self.tracker = EncounterTracker(detection.encounter_gap_s, encounter)
        self.events_emitted = 0
        self.last_clip_mono: float | None = None
        self.last_stream_key = ""
        # Events a durable sink refused, oldest first, per sink.
        self._unwritten: dict[str, deque[Event]] = {s.name: deque() for s in self.sinks
                                                    if s.durable}

    @property
    def accepted(self) -> bool:
        """Every durable sink holds every event emitted so far."""
        return not any(self._unwritten.values())

    @property
    def open_encounter(self) -> Encounter | None:
        return self.tracker.current

    async def clip(self, clip: ClipResult, stream_key: str,
                   labels: ClipLabels | None = None) -> bool:
        """Handle one finished clip of ``stream_key``; True once its records are durable.

        ``labels``: a multi-class model's labels for the clip (into the records).
        """
        self.last_clip_mono = time.monotonic()
        self.last_stream_key = stream_key
        primary = self.role == "primary"
        self._model_clips.inc()
        if primary:
            self.metrics.clips.inc()
            # The clip's confidence is OrcaHello's 0..100; the gauge is a 0..1 ratio.
            self.metrics.last_clip_confidence.set(clip.confidence / 100.0)
        start, _ = clip_times(clip)
        encounter_events = self.tracker.observe(clip, self._encounter_id(clip, stream_key))
        for ev in encounter_events:
            if ev.kind == "end":
                await self.emit(self._encounter_event(ev, stream_key))
        if clip.detected:
            self._model_detections.inc()
            if primary:
                self.metrics.detections.inc()
            await self.emit(make_detection_event(
                clip, encounter=self.tracker.current, station=self.station,
                model=self.model_info, detection=self.detection, stream_key=stream_key,
                labels=labels))
        for ev in encounter_events:
            if ev.kind == "start" and primary:
                self.metrics.encounters.inc()
            if ev.kind != "end":
                await self.emit(self._encounter_event(ev, stream_key))
        log.debug("clip %.0f-%.0f s of %s: detected=%s confidence=%.1f (t=%.0f)",
                  clip.start_s, clip.end_s, stream_key, clip.detected, clip.confidence, start)
        return self.accepted

    async def expire(self, now_t: float, slack_s: float) -> None:
        """End the open encounter when the stream has stalled (no clip for a long time).

        Normally the next clip ends an encounter; a node that goes offline sends
        none, so the live daemon calls this periodically with the wall clock
        (``now_t``, unix seconds). ``slack_s`` covers the usual delay between a
        clip's end and its decision, so a flowing stream is never cut short.
        """
        current = self.tracker.current
        if current is None:
            return
        idle = time.monotonic() - (self.last_clip_mono or 0.0)
        if idle < self.tracker.gap_s or now_t - current.end_t < self.tracker.gap_s + slack_s:
            return
        for ev in self.tracker.advance(now_t - slack_s):
            log.info("encounter %s ended: no audio from the stream for %.0f s", ev.encounter.id,
                     idle)
            await self.emit(self._encounter_event(ev, self.last_stream_key))

    def _encounter_event(self, ev: EncounterEvent, stream_key: str) -> Event:
        return make_encounter_event(ev, station=self.station, model=self.model_info,
                                    detection=self.detection, stream_key=stream_key)

    async def finish(self) -> None:
        """End of a replay: close the open encounter."""
        for ev in self.tracker.close():
            await self.emit(self._encounter_event(ev, ""))

    def _encounter_id(self, clip: ClipResult, stream_key: str) -> str:
        # Deterministic, so a restart that redoes a clip reuses the same id;
        # each model tracks its own encounters, so each has its own ids.
        start, _ = clip_times(clip)
        model = "" if self.role == "primary" else f"{self.model_info.get('id')}:"
        name = f"{self.station.id}:{stream_key}:{model}{start:.3f}:encounter"
        return str(uuid.uuid5(uuid.NAMESPACE_URL, name))

    async def start(self) -> None:
        """Start the sinks (the webhook resumes its outbox left by a previous run)."""
        for sink in self.sinks:
            await sink.start()

    async def emit(self, event: Event) -> None:
        self.events_emitted += 1
        await self.retry_pending()
        ready = [s for s in self.sinks if not (s.durable and self._unwritten[s.name])]
        for sink in self.sinks:
            if sink not in ready:
                self._unwritten[sink.name].append(event)  # behind the ones it refused
        for sink in await emit_each(ready, event, self.metrics):
            if sink.durable:
                self._unwritten[sink.name].append(event)
                log.error("sink %s refused event %s (%s); kept in memory and retried, the "
                          "resume point waits for it", sink.name, event.id, event.kind)
        self._report_unwritten()

    async def retry_pending(self) -> bool:
        """Offer refused events again, in order; True when none is left."""
        for sink in self.sinks:
            queue = self._unwritten.get(sink.name)
            while queue:
                if await emit_each([sink], queue[0], self.metrics):
                    break
                written = queue.popleft()
                log.info("sink %s: event %s written on retry; %d still waiting", sink.name,
                         written.id, len(queue))
        self._report_unwritten()
        return self.accepted

    def _report_unwritten(self) -> None:
        for name, queue in self._unwritten.items():
            if name != "webhook":  # the webhook reports its own outbox depth
                self.metrics.sink_metrics(name).outbox_depth.set(len(queue))

    async def close(self, timeout_s: float, *, close_sinks: bool = True) -> None:
        """Offer refused records once more, then close the sinks (unless another
        model's emitter owns them)."""
        if not await self.retry_pending():
            left = sum(len(q) for q in self._unwritten.values())
            log.error("%d event record(s) still refused by their sinks at shutdown; the "
                      "resume point is before them, so the next start scores them again",
                      left)
        if not close_sinks:
            return
        for sink in self.sinks:
            try:
                await sink.close(timeout_s)
            except Exception:
                log.exception("sink %s did not close cleanly", sink.name)
