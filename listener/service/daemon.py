"""The composition root: builds one station's parts, runs them, stops them in stages.

Start: probes first (so /healthz answers while the model loads), then the
model, the sinks, the source and the pipeline; READY=1 to systemd once the
pipeline runs. Stop (SIGTERM/SIGINT; a second signal only logs):

1. intake: the source stops polling, in-flight fetches end;
2. drain: ffmpeg is flushed and queued windows scored (``drain`` timeout);
3. sinks: outboxes flushed and files closed (``sinks`` timeout);
4. probes: the HTTP server closes.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import signal
import time
from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry

from listener.config import Config
from listener.errors import ListenerError
from listener.events.emitter import Emitter
from listener.pipeline.station import StationPipeline
from listener.service.metrics import Metrics
from listener.service.preflight import start_checks
from listener.service.probes import ProbeServer
from listener.service.sdnotify import SystemdNotifier, watchdog_loop
from listener.service.station import (
    Station,
    StationOptions,
    WindowScorer,
    build_station,
    load_lane_backends,
    model_build_info,
    tend,
)
from listener.service.web.station_view import StationConsole, station_console
from listener.sources.http_client import FetchResult, HttpClient

log = logging.getLogger(__name__)


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


# Slack beyond the sinks' own timeout before the close is abandoned.
SINKS_CLOSE_SLACK_S = 1.0


@dataclass(frozen=True)
class Timeouts:
    """Each shutdown stage's limit; the supervisor must allow their sum (see deploy/)."""

    drain_s: float = 30.0
    sinks_s: float = 15.0
    probes_s: float = 5.0

    @property
    def total_s(self) -> float:
        """The longest a shutdown can take once the stop signal arrives."""
        return self.drain_s + self.sinks_s + SINKS_CLOSE_SLACK_S + self.probes_s


class Daemon:
    """One station: ``await Daemon(cfg).run()`` returns the exit status.

    ``listener replay`` and ``listener demo`` compose the same parts through
    :class:`~listener.service.station.StationOptions` (replay's archive source
    and range filter); ``finish_at_end`` closes the open encounter when the
    source ends by itself (the end of a replay is the end of the data), and
    ``notifier`` replaces the systemd notifier (a replay is not the service).
    """

    def __init__(self, cfg: Config, *, scorer: WindowScorer | None = None,
                 registry: CollectorRegistry | None = None, timeouts: Timeouts = Timeouts(),
                 allow_random_weights: bool = False,
                 options: StationOptions | None = None, finish_at_end: bool = False,
                 notifier: SystemdNotifier | None = None) -> None:
        options = options or StationOptions()
        if cfg.stream is None and options.source is None:
            raise ListenerError(f"station {cfg.station.id}: the config has no 'stream' section; "
                                "`listener run` needs one (see config/example.yaml)")
        self.cfg = cfg
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry, cfg.station.id)
        self.timeouts = timeouts
        self.state = State.STARTING
        self.scorer = scorer
        self.allow_random_weights = allow_random_weights
        self.options = options
        self.finish_at_end = finish_at_end
        self.stop_event = asyncio.Event()
        self.station: Station | None = None
        self.probes: ProbeServer | None = None
        # The console's view, coverage ledger and pipeline observer (HTTP endpoint only).
        self.console: StationConsole | None = None
        self.notifier = notifier or SystemdNotifier()
        self._pipeline_task: asyncio.Task[None] | None = None

    @property
    def pipeline(self) -> StationPipeline | None:
        return self.station.pipeline if self.station is not None else None

    @property
    def emitter(self) -> Emitter | None:
        return self.station.emitter if self.station is not None else None

    @property
    def client(self) -> HttpClient | None:
        return self.station.client if self.station is not None else None

    # -- probes ------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if self.state is not State.RUNNING or self.pipeline is None:
            return False, f"daemon is {self.state.value}"
        stale = self.cfg.stream.stale_after_s if self.cfg.stream else 120.0
        last = self.pipeline.last_segment_mono
        if last is None:
            return False, "waiting for the first segment"
        age = time.monotonic() - last
        if age > stale:
            return False, f"no new segment for {age:.0f} s (stale after {stale:.0f} s)"
        scored = self.pipeline.windows_scored
        return True, f"ok: last segment {age:.0f} s ago, {scored} windows scored"

    def _healthy(self) -> bool:
        return self.state is State.RUNNING and self._pipeline_task is not None \
            and not self._pipeline_task.done()

    # -- lifecycle ---------------------------------------------------------

    def request_stop(self, why: str = "requested") -> None:
        if self.stop_event.is_set():
            log.info("already stopping (%s); waiting for the stages to finish", why)
            return
        log.info("stopping: %s", why)
        self.stop_event.set()
        if self.pipeline is not None:
            self.pipeline.request_stop()
        if self.client is not None:
            self.client.stop()

    async def run(self) -> int:
        # Start-up checks and the state folder's lock (a second daemon is refused).
        with start_checks([self.cfg], stream=self.options.source is None,
                          weights=self.scorer is None and not self.allow_random_weights):
            return await self._run()

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
            except (NotImplementedError, RuntimeError):
                pass  # not the main thread (tests) or no signals on this platform
        mcfg = self.cfg.metrics
        try:
            if mcfg.enabled:
                self.console = station_console(self.cfg, self.metrics, self)
                self.options = replace(self.options, observer=self.console.observer)
                self.probes = ProbeServer(self.registry, mcfg.host, mcfg.port, self.readiness,
                                          console=self.console.web(mcfg.host))
                await self.probes.start()
            await self._build()
        except ListenerError as err:
            log.error("cannot start station %s: %s", self.cfg.station.id, err)
            await self._stop_probes()
            return 1
        if self.stop_event.is_set():
            await self._shutdown()
            return 0
        assert self.pipeline is not None
        self.state = State.RUNNING
        self._pipeline_task = asyncio.create_task(self.pipeline.run(), name="pipeline")
        self.notifier.ready()
        self.notifier.status(f"following {self.cfg.station.id}")
        watchdog = asyncio.create_task(watchdog_loop(self.notifier, self._healthy,
                                                     self.stop_event), name="watchdog")
        expiry = None if self.finish_at_end else asyncio.create_task(
            self._expire_encounters(), name="encounter-expiry")
        stopper = asyncio.create_task(self.stop_event.wait(), name="stop-wait")
        await asyncio.wait({self._pipeline_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        status = 0
        if self._pipeline_task.done() and not self.stop_event.is_set():
            failure = self._pipeline_task.exception()
            if failure is not None:
                log.error("pipeline failed: %r", failure, exc_info=failure)
                status = 1
            else:
                log.info("the stream ended")
                if self.finish_at_end and self.emitter is not None and self.pipeline is not None \
                        and not self.pipeline.source.stop_event.is_set():
                    await self.emitter.finish()
        stopper.cancel()
        await self._shutdown()
        watchdog.cancel()
        if expiry is not None:
            expiry.cancel()
        return status

    async def _build(self) -> None:
        cfg = self.cfg
        scorer = self.scorer
        if scorer is None:
            from listener.model.scorer import Scorer

            scorer = self.scorer = await asyncio.to_thread(
                Scorer, cfg.model, cfg.frontend, allow_random_weights=self.allow_random_weights)
        info = scorer.info
        self.metrics.model_loaded.set(1)
        self.metrics.set_build_info(**model_build_info(cfg, info))
        backends = await asyncio.to_thread(load_lane_backends, cfg, self.options.backends)
        station = build_station(cfg, scorer, self.metrics,
                                options=replace(self.options, backends=backends),
                                on_fetch=self._observe_fetch)
        await station.emitter.start()
        self.station = station
        if self.console is not None:
            self.console.attach_history(station.pipeline.history)

    async def _expire_encounters(self, every_s: float = 30.0) -> None:
        """Tend the station (live mode only; :func:`~listener.service.station.tend`)."""
        while True:
            await asyncio.sleep(every_s)
            if self.station is not None:
                await tend(self.station)

    def _observe_fetch(self, result: FetchResult) -> None:
        if result.ok:
            self.metrics.observe_fetch(result.kind, result.nbytes, result.elapsed_s)
        elif result.kind == "playlist":
            self.metrics.playlist_errors.inc()

    async def _shutdown(self) -> None:
        self.state = State.STOPPING
        self.notifier.stopping()
        if self.pipeline is not None:
            self.pipeline.request_stop()
        if self.client is not None:
            self.client.stop()
        task = self._pipeline_task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), self.timeouts.drain_s)
            except TimeoutError:
                log.warning("drain: pipeline still busy after %.0f s; cancelling it",
                            self.timeouts.drain_s)
                task.cancel("shutdown drain timeout")
                await asyncio.gather(task, return_exceptions=True)
            except Exception:
                log.exception("pipeline failed while draining")
        if self.pipeline is not None:
            self.pipeline.close()
        if self.emitter is not None:
            try:
                await asyncio.wait_for(self.emitter.close(self.timeouts.sinks_s),
                                       self.timeouts.sinks_s + SINKS_CLOSE_SLACK_S)
            except TimeoutError:
                log.warning("sinks: not closed after %.0f s", self.timeouts.sinks_s)
        if self.client is not None:
            self.client.close()
        if self.console is not None:
            self.console.close()
        await self._stop_probes()
        self.state = State.STOPPED
        log.info("station %s stopped", self.cfg.station.id)

    async def _stop_probes(self) -> None:
        if self.probes is not None:
            try:
                await asyncio.wait_for(self.probes.stop(), self.timeouts.probes_s)
            except TimeoutError:
                log.warning("probes: server not stopped after %.0f s", self.timeouts.probes_s)


def run_daemon(cfg: Config) -> int:
    """Run one station until stopped; the exit status for the CLI."""
    return asyncio.run(Daemon(cfg).run())
