"""Many stations in one process: one model (and batcher) per distinct model config.

``listener run --config A.yaml --config B.yaml`` (or ``--config DIR/``) runs a
:class:`Fleet`. Each station keeps its own source, decoder, windows, rule,
resume state, sinks and ``station`` metric label (:class:`StationUnit`); the
stations whose ``model`` and ``frontend`` sections are equal share one loaded
model and one :class:`~listener.pipeline.batcher.SharedBatcher`, which fills
batches fairly and bounds each station's backlog on its own.

Isolation: each station runs in its own task under a supervisor. A station
whose pipeline fails is closed and rebuilt after a backoff (from its state
file, like a restart); a dead stream only makes its own station stale. The
others never wait on it: fetches and sink writes run in a thread pool sized
for the fleet, and the batcher never waits for a lane. ``/readyz`` answers
JSON per station and is ready while ``quorum`` stations are current.

Start and stop follow :class:`~listener.service.daemon.Daemon`: probes, models,
stations; on a signal every station's intake stops, then all drain together
(``drain`` timeout), then all sinks close (``sinks`` timeout), then the probes.
The first station's ``metrics`` section says where the probes listen.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry

from listener.config import Config
from listener.errors import ListenerError
from listener.model.backends.base import ModelBackend
from listener.pipeline.batcher import SharedBatcher
from listener.service.daemon import SINKS_CLOSE_SLACK_S, Timeouts
from listener.service.metrics import MetricFamilies, Metrics
from listener.service.preflight import start_checks
from listener.service.probes import ProbeServer
from listener.service.readiness import StationHealth, fleet_readiness
from listener.service.roster import model_key
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
from listener.service.web.console import Console
from listener.service.web.security import load_token
from listener.service.web.station_view import StationConsole, station_console
from listener.sources.http_client import FetchResult

log = logging.getLogger(__name__)

ScorerFactory = Callable[[Config], WindowScorer]
# Blocking work (HTTP fetches with their retries, sink writes) runs in threads;
# a dead stream holds one for its timeouts, so each station gets a few.
THREADS_PER_STATION = 4


class StationUnit:
    """One station of a fleet: built, run, rebuilt after a failure, stopped."""

    def __init__(self, fleet: Fleet, cfg: Config) -> None:
        self.fleet = fleet
        self.cfg = cfg
        self.id = cfg.station.id
        self.metrics = Metrics(fleet.families, self.id)
        self.station: Station | None = None
        self.state = "starting"
        self.error: str | None = None
        self.restarts = 0
        self.task: asyncio.Task[None] | None = None
        # The other models' backends, loaded once (off the loop) and kept for rebuilds.
        self.backends: dict[str, ModelBackend] = {}
        # The console's view, ledger and observer, when the fleet serves HTTP.
        self.console: StationConsole | None = None

    @property
    def scorer(self) -> WindowScorer | None:
        found = self.fleet.models.get(model_key(self.cfg))
        return found[0] if found is not None else None

    def readiness(self) -> tuple[bool, str]:
        health = self.health()
        return health.current, health.reason

    def build(self) -> None:
        """Build the station's parts (raises ListenerError)."""
        scorer, shared = self.fleet.models[model_key(self.cfg)]
        lane = shared.lane(self.id, max_backlog_s=self.cfg.buffer.max_backlog_s,
                           hop_s=self.cfg.detection.hop_s, metrics=self.metrics)
        options = replace(self.fleet.options, backends=self.backends)
        if self.console is not None:
            options = replace(options, observer=self.console.observer)
        try:
            self.station = build_station(self.cfg, scorer, self.metrics,
                                         options=options, on_fetch=self._observe,
                                         batcher=lane)
        except BaseException:
            lane.shutdown()
            raise
        if self.console is not None:
            self.console.attach_history(self.station.pipeline.history)

    def _observe(self, result: FetchResult) -> None:
        if result.ok:
            self.metrics.observe_fetch(result.kind, result.nbytes, result.elapsed_s)
        elif result.kind == "playlist":
            self.metrics.playlist_errors.inc()

    def health(self) -> StationHealth:
        pipeline = self.station.pipeline if self.station is not None else None
        if self.state != "running" or pipeline is None:
            return StationHealth(self.id, self.state, False, self.error or self.state,
                                 restarts=self.restarts)
        stale = self.cfg.stream.stale_after_s if self.cfg.stream else 120.0
        last = pipeline.last_segment_mono
        age = None if last is None else time.monotonic() - last
        if age is None:
            current, reason = False, "waiting for the first segment"
        elif age > stale:
            current, reason = False, f"no new segment for {age:.0f} s (stale after {stale:.0f} s)"
        else:
            current, reason = True, "ok"
        return StationHealth(self.id, self.state, current, reason,
                             None if age is None else round(age, 1), pipeline.windows_scored,
                             self.restarts)

    async def supervise(self) -> None:
        """Run the pipeline; after a failure close it and rebuild, with a growing backoff."""
        backoff = self.fleet.restart_backoff_s
        while True:
            assert self.station is not None
            await self.station.emitter.start()
            self.state = "running"
            try:
                await self.station.pipeline.run()
            except Exception as err:
                if self.fleet.stop_event.is_set():
                    raise
                self.state, self.error = "restarting", f"pipeline failed: {err!r}"
                log.error("station %s: pipeline failed: %r; restarting in %.0f s", self.id, err,
                          backoff, exc_info=err)
            else:
                if not self.fleet.stop_event.is_set():
                    self.state = "ended"
                    log.info("station %s: the stream ended", self.id)
                return
            await self.close_parts()
            try:
                await asyncio.wait_for(self.fleet.stop_event.wait(), backoff)
                return  # stopping: no rebuild
            except TimeoutError:
                pass
            backoff = min(backoff * 2, 60.0)
            self.restarts += 1
            try:
                self.build()
            except ListenerError as err:
                self.state, self.error = "failed", str(err)
                log.error("station %s: cannot rebuild: %s", self.id, err)
                return

    def request_stop(self) -> None:
        if self.station is not None:
            self.station.pipeline.request_stop()
            if self.station.client is not None:
                self.station.client.stop()

    async def close_parts(self) -> None:
        """Close the pipeline, sinks and client of the current build."""
        station, self.station = self.station, None
        if station is None:
            return
        station.pipeline.close()
        sinks_s = self.fleet.timeouts.sinks_s
        try:
            await asyncio.wait_for(station.emitter.close(sinks_s), sinks_s + SINKS_CLOSE_SLACK_S)
        except TimeoutError:
            log.warning("station %s: sinks not closed after %.0f s", self.id, sinks_s)
        if station.client is not None:
            station.client.close()
        if self.console is not None:
            self.console.close()


class Fleet:
    """Stations run together: ``await Fleet(configs).run()`` returns the exit status.

    Args:
        configs: one config per station (ids unique; see :mod:`listener.service.roster`).
        scorer: one model for every station (tests, benchmarks); None = load
            one per distinct model config with ``load_scorer``.
        quorum: ``/readyz`` is ready while this many stations are current.
        keep_going: a station that cannot be built at start is reported and
            skipped instead of stopping the process.
    """

    def __init__(self, configs: Sequence[Config], *, scorer: WindowScorer | None = None,
                 load_scorer: ScorerFactory | None = None,
                 registry: CollectorRegistry | None = None, timeouts: Timeouts | None = None,
                 quorum: int = 1, keep_going: bool = False,
                 options: StationOptions | None = None,
                 notifier: SystemdNotifier | None = None,
                 restart_backoff_s: float = 5.0) -> None:
        if not configs:
            raise ListenerError("a fleet needs at least one station config")
        ids = [c.station.id for c in configs]
        if len(set(ids)) != len(ids):
            raise ListenerError(f"station ids must be unique, got {ids}")
        self.registry = registry or CollectorRegistry()
        self.families = MetricFamilies(self.registry)
        self.units = [StationUnit(self, c) for c in configs]
        self.scorer = scorer
        self.load_scorer = load_scorer
        self.timeouts = timeouts or Timeouts()
        self.quorum = quorum
        self.keep_going = keep_going
        self.options = options or StationOptions()
        self.notifier = notifier or SystemdNotifier()
        self.restart_backoff_s = restart_backoff_s
        self.models: dict[str, tuple[WindowScorer, SharedBatcher[Any]]] = {}
        # The other models' backends, one per distinct configuration (shared by stations).
        self.lane_backends: dict[str, ModelBackend] = {}
        self.state = "starting"
        self.stop_event = asyncio.Event()
        self.probes: ProbeServer | None = None

    def unit(self, station_id: str) -> StationUnit:
        return next(u for u in self.units if u.id == station_id)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return fleet_readiness([u.health() for u in self.units], self.quorum, self.state)

    def request_stop(self, why: str = "requested") -> None:
        if self.stop_event.is_set():
            log.info("already stopping (%s); waiting for the stages to finish", why)
            return
        log.info("stopping: %s", why)
        self.stop_event.set()
        for unit in self.units:
            unit.request_stop()

    async def run(self) -> int:
        # Start-up checks and the state folders' locks (a second daemon is refused).
        with start_checks([u.cfg for u in self.units], stream=self.options.source is None,
                          weights=self.scorer is None and self.load_scorer is None,
                          keep_going=self.keep_going):
            return await self._run()

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
            except (NotImplementedError, RuntimeError):
                pass  # not the main thread (tests) or no signals on this platform
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
            max(32, THREADS_PER_STATION * len(self.units)), thread_name_prefix="io"))
        mcfg = self.units[0].cfg.metrics
        try:
            if mcfg.enabled:
                for unit in self.units:
                    unit.console = station_console(unit.cfg, unit.metrics, unit)
                console = Console([u.console.view for u in self.units if u.console is not None],
                                  bind_host=mcfg.host, token=load_token())
                self.probes = ProbeServer(self.registry, mcfg.host, mcfg.port, self.readiness,
                                          console=console)
                await self.probes.start()
            await self._load_models()
            await self._build_all()
        except ListenerError as err:
            log.error("cannot start: %s", err)
            await self._shutdown()
            return 1
        running = [u for u in self.units if u.station is not None]
        if not running:
            log.error("no station could be started")
            await self._shutdown()
            return 1
        self.state = "running"
        for unit in running:
            unit.task = asyncio.create_task(unit.supervise(), name=f"station-{unit.id}")
        self.notifier.ready()
        self.notifier.status(f"following {len(running)} station(s)")
        helpers = [asyncio.create_task(watchdog_loop(self.notifier, self._healthy,
                                                     self.stop_event), name="watchdog"),
                   asyncio.create_task(self._expire_encounters(), name="encounter-expiry")]
        stopper = asyncio.create_task(self.stop_event.wait(), name="stop-wait")
        tasks = {u.task for u in running if u.task is not None}
        await asyncio.wait({stopper, asyncio.ensure_future(asyncio.wait(tasks))},
                           return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        await self._shutdown()
        for task in helpers:
            task.cancel()
        failed = [u.id for u in self.units if u.state == "failed"]
        return 1 if failed and not self.keep_going else 0

    async def _load_models(self) -> None:
        for unit in self.units:
            key = model_key(unit.cfg)
            if key in self.models:
                continue
            scorer = self.scorer
            if scorer is None:
                factory = self.load_scorer or _load_scorer
                scorer = await asyncio.to_thread(factory, unit.cfg)
            model = unit.cfg.model
            self.models[key] = (scorer, SharedBatcher(
                scorer.score_waves, batch_size=model.batch_size,
                max_wait_s=model.max_batch_wait_s))
            log.info("model %s loaded (%d distinct so far)", model.model_id, len(self.models))
        for unit in self.units:
            self._set_build_info(unit)

    def _set_build_info(self, unit: StationUnit) -> None:
        info = self.models[model_key(unit.cfg)][0].info
        unit.metrics.model_loaded.set(1)
        unit.metrics.set_build_info(**model_build_info(unit.cfg, info))

    async def _build_all(self) -> None:
        for unit in self.units:
            try:
                unit.backends = await asyncio.to_thread(
                    load_lane_backends, unit.cfg, self.options.backends, self.lane_backends)
                unit.build()
            except ListenerError as err:
                unit.state, unit.error = "failed", str(err)
                if not self.keep_going:
                    # Most errors already name the station: do not say it twice.
                    prefix = "" if str(err).startswith(f"station {unit.id}:") \
                        else f"station {unit.id}: "
                    raise ListenerError(f"{prefix}{err}") from err
                log.error("station %s skipped (--keep-going): %s", unit.id, err)

    def _healthy(self) -> bool:
        return self.state == "running" and any(
            u.task is not None and not u.task.done() for u in self.units)

    async def _expire_encounters(self, every_s: float = 30.0) -> None:
        """Tend every running station (:func:`~listener.service.station.tend`)."""
        while True:
            await asyncio.sleep(every_s)
            for unit in self.units:
                if unit.station is not None and unit.state == "running":
                    await tend(unit.station)

    async def _shutdown(self) -> None:
        self.state = "stopping"
        self.notifier.stopping()
        self.stop_event.set()
        for unit in self.units:
            unit.request_stop()
        tasks = [u.task for u in self.units if u.task is not None and not u.task.done()]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.timeouts.drain_s)
            for task in pending:
                log.warning("drain: %s still busy after %.0f s; cancelling it",
                            task.get_name(), self.timeouts.drain_s)
                task.cancel("shutdown drain timeout")
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(u.close_parts() for u in self.units))
        for unit in self.units:
            if unit.state in ("running", "restarting", "starting"):
                unit.state = "stopped"
        for _, shared in self.models.values():
            await shared.aclose()
        if self.probes is not None:
            try:
                await asyncio.wait_for(self.probes.stop(), self.timeouts.probes_s)
            except TimeoutError:
                log.warning("probes: server not stopped after %.0f s", self.timeouts.probes_s)
        self.state = "stopped"
        log.info("fleet of %d station(s) stopped", len(self.units))


def _load_scorer(cfg: Config) -> WindowScorer:
    from listener.model.scorer import Scorer

    return Scorer(cfg.model, cfg.frontend)


def run_fleet(configs: Sequence[Config], *, quorum: int = 1, keep_going: bool = False) -> int:
    """Run the stations until stopped; the exit status for the CLI."""
    return asyncio.run(Fleet(configs, quorum=quorum, keep_going=keep_going).run())
