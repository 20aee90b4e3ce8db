"""One station of the runner: planned, built, run, rebuilt after a failure, stopped."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from listener.config import Config
from listener.errors import ListenerError
from listener.metrics import Metrics
from listener.model.backends.check import StationPlan
from listener.pipeline.contracts import PipelineStats
from listener.retry import Backoff
from listener.runtime.builder import LoadedModel, Station, StationOptions, build_station
from listener.runtime.readiness import LastError, StationHealth
from listener.sources.http_client import FetchResult

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from listener.web.station_view import StationConsole

log = logging.getLogger(__name__)

# Slack beyond the sinks' own timeout before the close is abandoned.
SINKS_CLOSE_SLACK_S = 1.0
#: The longest wait between rebuilds of a failing station (the backoff doubles up to it).
MAX_BACKOFF_S = 60.0


class State(enum.Enum):
    """The runner's and each station's state (one enum for both)."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    ENDED = "ended"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"


class StationUnit:
    """One station: its plan, its parts (rebuilt after a failure), its health."""

    clock: Callable[[], float] = staticmethod(time.monotonic)  # how long a run lasted

    def __init__(self, plan: StationPlan, metrics: Metrics, *, options: StationOptions,
                 pool: Executor, sinks_timeout_s: float) -> None:
        self.options = options
        self.pool = pool  # the runner's resample pool, shared by every station
        self.sinks_timeout_s = sinks_timeout_s
        self.plan = plan
        self.cfg: Config = plan.cfg
        self.id = self.cfg.station.id
        self.metrics = metrics
        self.models: list[LoadedModel] = []
        self.station: Station | None = None
        self.closed: Station | None = None  # the last build, kept for a look after the run
        self.state = State.STARTING
        self.error: str | None = None
        self.error_record: LastError | None = None  # the last fetch error
        self.restarts = 0
        self.running_since: float | None = None  # unix time the station first ran
        self.task: asyncio.Task[None] | None = None
        # The console's view, ledger and observer, when the runner serves HTTP.
        self.console: StationConsole | None = None

    def build(self) -> None:
        """Build the station's parts on its loaded models (raises ListenerError)."""
        self.station = build_station(
            self.cfg, self.models, self.metrics, pool=self.pool, options=self.options,
            on_fetch=self.observe_fetch,
            observer=self.console.observer if self.console is not None else None)
        if self.console is not None:
            self.console.attach_history(self.station.pipeline.history)

    def observe_fetch(self, result: FetchResult) -> None:
        if result.ok:
            self.metrics.observe_fetch(result.kind, result.nbytes, result.elapsed_s)
            if self.error_record is None or not self.error_record.active:
                return  # the usual case, every poll: nothing to record
        elif result.kind == "playlist":
            self.metrics.playlist_errors.inc()
        name = result.url.rsplit("/", 1)[-1] or result.url
        message = f"{name}: {result.error or 'failed'}"
        if self.error_record is not None:
            self.error_record = self.error_record.observe(result.ok, result.kind, message,
                                                          time.time())
        elif not result.ok:
            self.error_record = LastError(result.kind, message, time.time(), time.time())

    @property
    def last_error(self) -> dict[str, Any] | None:
        """The last fetch error as the console and ``/readyz`` show it."""
        record = self.error_record
        if record is None:
            return None
        now = time.time()
        return {**record.to_json(now), "text": record.describe(now)}

    def health(self) -> StationHealth:
        pipeline = self.station.pipeline if self.station is not None else None
        error = self.last_error
        if self.state is not State.RUNNING or pipeline is None:
            return StationHealth(self.id, self.state.value, False,
                                 self.error or self.state.value, restarts=self.restarts,
                                 last_error=error)
        stale = self.cfg.stream.stale_after_s if self.cfg.stream else 120.0
        last = pipeline.last_segment_mono
        age = None if last is None else time.monotonic() - last
        if age is None:
            current, reason = False, "waiting for the first segment"
        elif age > stale:
            current, reason = False, f"no new segment for {age:.0f} s (stale after {stale:.0f} s)"
        else:
            current, reason = True, "ok"
        if not current and error is not None and error["active"]:
            reason = f"{reason}; {error['text']}"
        return StationHealth(self.id, self.state.value, current, reason,
                             None if age is None else round(age, 1), pipeline.windows_scored,
                             self.restarts, error)

    def readiness(self) -> tuple[bool, str]:
        health = self.health()
        if health.current:
            return True, (f"ok: last segment {health.last_segment_age_s:.0f} s ago, "
                          f"{health.windows_scored} windows scored")
        return False, health.reason

    # -- what the console reads (listener.web.station_view.RunningStation) --

    def pipeline_stats(self) -> PipelineStats | None:
        return self.station.pipeline.stats() if self.station is not None else None

    @property
    def live_edge_utc(self) -> datetime | None:
        return self.station.source.live_edge_utc if self.station is not None else None

    @property
    def model_info(self) -> Mapping[str, Any]:
        return self.models[0].info if self.models else {}

    async def supervise(self, stop_event: asyncio.Event, backoff_s: float) -> None:
        """Run the pipeline; after a failure close it and rebuild, with a growing backoff
        (from ``backoff_s`` again after a run longer than the longest wait).

        A failure of the sinks' start or of a rebuild counts as a pipeline
        failure; only a rebuild refused with a ListenerError (the config)
        ends the station.
        """
        policy = Backoff(backoff_s, MAX_BACKOFF_S)  # jittered: a fleet's stations
        attempt = 0  # that fail together do not rebuild in lockstep
        while True:
            if self.station is not None:  # None: the last rebuild failed; it is retried
                started = self.clock()
                failure = await self._run_once(stop_event)
                if failure is None:
                    return
                if self.clock() - started > MAX_BACKOFF_S:
                    attempt = 0  # after a healthy run, a new incident, not a crash loop
                await self.close_parts(self.sinks_timeout_s)
            attempt += 1
            if await _stopped_within(stop_event, policy.delay(attempt)):
                return
            self.restarts += 1
            if not self._rebuild():
                return

    def _rebuild(self) -> bool:
        """Build again after a failure; False when the config refuses it (the station ends)."""
        try:
            self.build()
        except ListenerError as err:
            self.state, self.error = State.FAILED, str(err)
            log.error("station %s: cannot rebuild: %s", self.id, err)
            return False
        except Exception as err:
            self._failed("rebuild failed", err)
        return True

    def _failed(self, what: str, err: Exception) -> None:
        self.state, self.error = State.RESTARTING, f"{what}: {err!r}"
        log.error("station %s: %s: %r", self.id, what, err, exc_info=err)

    async def _run_once(self, stop_event: asyncio.Event) -> Exception | None:
        """Start the sinks and run the pipeline once; the failure to restart after, or None.

        Raises:
            Exception: the failure, when stopping or not restarting.
        """
        assert self.station is not None
        what = "sinks failed to start"
        try:
            await self.station.emitter.start()  # the primary's sinks are every sink
            self.state = State.RUNNING
            self.running_since = self.running_since or time.time()
            what = "pipeline failed"
            await self.station.pipeline.run()
        except Exception as err:
            if stop_event.is_set() or not self.options.restart_on_failure:
                raise  # the task fails (StationUnit.task_done logs it)
            self._failed(what, err)
            return err
        if not stop_event.is_set():
            self.state = State.ENDED
            log.info("station %s: the stream ended", self.id)
            if self.options.finish_at_end and not self.station.source.stop_event.is_set():
                for emitter in self.station.emitters:
                    await emitter.finish()
        return None

    def task_done(self, task: asyncio.Task[None]) -> bool:
        """Mark the station failed when its task died of an error, and log it at once.

        Added as the task's done-callback, so a fleet learns of one dead station
        while the others run; True when the task failed.
        """
        if task.cancelled() or (err := task.exception()) is None:
            return False
        self.state, self.error = State.FAILED, f"failed: {err!r}"
        log.error("station %s: failed: %r", self.id, err, exc_info=err)
        return True

    def request_stop(self) -> None:
        if self.station is not None:
            self.station.pipeline.request_stop()
            if self.station.client is not None:
                self.station.client.stop()

    async def close_parts(self, sinks_s: float = 15.0) -> None:
        """Close the pipeline, sinks and client of the current build."""
        station, self.station = self.station, None
        if station is None:
            return
        self.closed = station
        station.pipeline.close()
        for emitter in station.lane_emitters:
            await emitter.close(sinks_s, close_sinks=False)  # they share the primary's sinks
        try:
            await asyncio.wait_for(station.emitter.close(sinks_s), sinks_s + SINKS_CLOSE_SLACK_S)
        except TimeoutError:
            log.warning("station %s: sinks not closed after %.0f s", self.id, sinks_s)
        if station.agreement is not None:
            station.agreement.close()
        if station.client is not None:
            station.client.close()
        if self.console is not None:
            self.console.close()


async def _stopped_within(stop_event: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(stop_event.wait(), seconds)
        return True
    except TimeoutError:
        return False


StationFilter = Callable[[StationUnit], bool]
