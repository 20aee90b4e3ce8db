"""The one runner: ``listener run``, ``demo``, ``replay`` and the tests all run stations here.

A lone station is a fleet of one. Each station keeps its own source,
decoder, windows, rules, resume state, sinks and ``station`` metric label
(:class:`~listener.runtime.unit.StationUnit`); every model is loaded once per
process (:class:`~listener.runtime.models.ModelRegistry`) and shares one
fair batcher across the stations that run it. What differs between run,
demo and replay is :class:`~listener.runtime.builder.StationOptions`.

Start: probes first (so /healthz answers while the models load), then the
models, then the stations; READY=1 to systemd once they run. Stop
(SIGTERM/SIGINT; a second signal only logs), each stage under its timeout:

1. intake: every source stops polling, in-flight fetches end;
2. drain: ffmpeg is flushed and queued windows scored (``drain``);
3. sinks: outboxes flushed and files closed (``sinks``);
4. probes: the HTTP server closes (``probes``).

Isolation: a station whose pipeline (or its sinks' start, or a rebuild) fails
is closed and rebuilt after a backoff (``restart_on_failure``); a station task
that dies is logged and marked failed at once, not when the fleet stops; a
dead stream only makes its own station stale; fetches and sink writes run in
a thread pool sized for the fleet.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from listener.config import Config
from listener.errors import ListenerError
from listener.metrics import MetricFamilies, Metrics
from listener.model.backends.check import StationPlan, plan_station
from listener.runtime.builder import StationOptions, model_build_info, tend
from listener.runtime.models import ModelRegistry
from listener.runtime.preflight import start_checks
from listener.runtime.readiness import fleet_readiness
from listener.runtime.sdnotify import SystemdNotifier, watchdog_loop
from listener.runtime.unit import SINKS_CLOSE_SLACK_S, State, StationUnit
from listener.tasks import cancel_and_wait
from listener.web.server import WebServer
from listener.web.station_view import fleet_console, station_console

log = logging.getLogger(__name__)

# Blocking work (HTTP fetches with their retries, sink writes) runs in threads;
# a dead stream holds one for its timeouts, so each station gets a few.
THREADS_PER_STATION = 4
# Resampling of every station's windows shares this many threads.
RESAMPLE_THREADS = 2
# How long a station task cancelled at the drain timeout may take to end.
CANCEL_LIMIT_S = 5.0


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


class Runner:
    """Stations run together: ``await Runner(configs).run()`` returns the exit status.

    Args:
        configs: one config per station, or its plan (``listener run``'s roster plans
            each file as it loads it); ids unique (:mod:`listener.runtime.roster`).
        models: the process's models (a scorer or backends handed in by tests).
        quorum: ``/readyz`` is ready while this many stations are current.
        keep_going: a station that cannot be built at start is reported and
            skipped instead of stopping the process.
        options: how the stations run (``listener run``'s defaults).
        skipped: config files ``--keep-going`` left out, with why (the console lists them).
    """

    def __init__(self, configs: Sequence[Config | StationPlan], *,
                 models: ModelRegistry | None = None,
                 registry: CollectorRegistry | None = None, timeouts: Timeouts | None = None,
                 quorum: int = 1, keep_going: bool = False,
                 options: StationOptions | None = None,
                 notifier: SystemdNotifier | None = None,
                 restart_backoff_s: float = 5.0,
                 skipped: Sequence[tuple[Path, str]] = ()) -> None:
        if not configs:
            raise ListenerError("a fleet needs at least one station config")
        ids = [(c.cfg if isinstance(c, StationPlan) else c).station.id for c in configs]
        if len(set(ids)) != len(ids):
            raise ListenerError(f"station ids must be unique, got {ids}")
        self.options = options or StationOptions()
        self.registry = registry or CollectorRegistry()
        self.families = MetricFamilies(self.registry)
        self.configs = list(configs)
        self.units: list[StationUnit] = []
        self.models = models or ModelRegistry(
            allow_random_weights=self.options.allow_random_weights)
        self.timeouts = timeouts or Timeouts()
        self.quorum = quorum
        self.keep_going = keep_going
        self.notifier = notifier or SystemdNotifier()
        self.restart_backoff_s = restart_backoff_s
        self.skipped = [(str(path), why) for path, why in skipped]
        self.state = State.STARTING
        # Set by a stop request, and by the shutdown itself (it ends restart backoffs).
        self.stop_event = asyncio.Event()
        self.stop_reason: str | None = None  # why a stop was requested (None: it was not)
        self.probes: WebServer | None = None
        self.pool = concurrent.futures.ThreadPoolExecutor(RESAMPLE_THREADS,
                                                          thread_name_prefix="resample")
        self.failed = False

    def unit(self, station_id: str) -> StationUnit:
        return next(u for u in self.units if u.id == station_id)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return fleet_readiness([u.health() for u in self.units], self.quorum,
                               self.state.value)

    def request_stop(self, why: str = "requested") -> None:
        if self.stop_event.is_set():
            log.info("already stopping (%s); waiting for the stages to finish", why)
            return
        log.info("stopping: %s", why)
        self.stop_reason = why
        self.stop_event.set()
        for unit in self.units:
            unit.request_stop()

    async def run(self) -> int:
        """Run until stopped or every stream ended; the exit status.

        Raises:
            ListenerError: a start-up check failed, or another listener holds
                a state folder (its PID named).
        """
        configs = [c.cfg if isinstance(c, StationPlan) else c for c in self.configs]
        models = self.models
        weights = models.scorer is None and models.load_scorer is None \
            and not self.options.allow_random_weights
        # Start-up checks and the state folders' locks (a second daemon is refused).
        with start_checks(configs, stream=self.options.source is None, weights=weights,
                          keep_going=self.keep_going):
            return await self._run()

    async def _run(self) -> int:
        self._handle_signals()
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
            max(32, THREADS_PER_STATION * len(self.configs)), thread_name_prefix="io"))
        try:
            self._plan()
            await self._serve()
            await self._build_all()
        except ListenerError as err:
            log.error("cannot start: %s", err)
            await self._shutdown()
            return 1
        running = [u for u in self.units if u.station is not None]
        if not running or self.stop_event.is_set():
            if not running:
                log.error("no station could be started")
            await self._shutdown()
            return 0 if self.stop_event.is_set() else 1
        self.state = State.RUNNING
        for unit in running:
            unit.task = asyncio.create_task(
                unit.supervise(self.stop_event, self.restart_backoff_s),
                name=f"station-{unit.id}")
            unit.task.add_done_callback(self._task_done(unit))
        self.notifier.ready()
        self.notifier.status(f"following {len(running)} station(s)")
        await self._wait(running)
        await self._shutdown()
        failed = [u.id for u in self.units if u.state is State.FAILED]
        return 1 if self.failed or (failed and not self.keep_going) else 0

    def _handle_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
            except (NotImplementedError, RuntimeError):
                pass  # not the main thread (tests) or no signals on this platform

    def _plan(self) -> None:
        """Plan every station's models once (config errors before anything loads)."""
        for item in self.configs:
            if isinstance(item, StationPlan):
                plan = item
            else:
                try:
                    plan = plan_station(item)
                except ListenerError as err:
                    raise _named(item.station.id, err) from err
            station_id = plan.cfg.station.id
            self.units.append(StationUnit(plan, Metrics(self.families, station_id),
                                          options=self.options, pool=self.pool,
                                          sinks_timeout_s=self.timeouts.sinks_s))

    async def _serve(self) -> None:
        """Probes, metrics and the console, before the models load."""
        mcfg = self.units[0].cfg.metrics
        if not mcfg.enabled:
            return
        for unit in self.units:
            unit.console = station_console(unit.cfg, unit.metrics, unit)
        self.probes = WebServer(self.registry, mcfg.host, mcfg.port, self._ready_check(),
                                limits=mcfg.limits,
                                console=fleet_console(self.units, mcfg.host, self.skipped))
        await self.probes.start()

    def _ready_check(self) -> Any:
        if len(self.units) == 1 and self.quorum == 1:
            return self.units[0].readiness  # a lone station answers in plain text
        return self.readiness

    async def _build_all(self) -> None:
        for unit in self.units:
            try:
                unit.models = await self.models.models_for(unit.cfg, unit.plan.models)
                self._set_build_info(unit)
                unit.build()
            except ListenerError as err:
                unit.state, unit.error = State.FAILED, str(err)
                if not self.keep_going:
                    raise _named(unit.id, err) from err
                log.error("station %s skipped (--keep-going): %s", unit.id, err)

    def _set_build_info(self, unit: StationUnit) -> None:
        unit.metrics.model_loaded.set(1)
        unit.metrics.set_build_info(**model_build_info(unit.cfg, unit.models[0].info))

    async def _wait(self, running: Sequence[StationUnit]) -> None:
        helpers: list[asyncio.Task[Any]] = [asyncio.create_task(
            watchdog_loop(self.notifier, self._healthy, self.stop_event), name="watchdog")]
        if not self.options.finish_at_end:
            helpers.append(asyncio.create_task(self._tend(), name="encounter-expiry"))
        stopper = asyncio.create_task(self.stop_event.wait(), name="stop-wait")
        tasks = {u.task for u in running if u.task is not None}
        await asyncio.wait({stopper, asyncio.ensure_future(asyncio.wait(tasks))},
                           return_when=asyncio.FIRST_COMPLETED)
        for task in [stopper, *helpers]:
            task.cancel()

    def _task_done(self, unit: StationUnit) -> Any:
        """The done-callback of ``unit``'s task: a failure is logged and fails the run."""
        def done(task: asyncio.Task[None]) -> None:
            if unit.task_done(task):
                self.failed = True
        return done

    def _healthy(self) -> bool:
        return self.state is State.RUNNING and any(
            u.task is not None and not u.task.done() for u in self.units)

    async def _tend(self) -> None:
        """Tend every running station (:func:`~listener.runtime.builder.tend`) every
        30 s, or a quarter of the shortest ``stream.stalled_clip_after_s`` or
        ``stream.stale_after_s`` when that is less, so a stall is acted on within
        1.25 times its limit. One station's failure is logged; the others are tended."""
        limits = [s for u in self.units if u.cfg.stream
                  for s in (u.cfg.stream.stale_after_s, u.cfg.stream.stalled_clip_after_s)]
        every_s = min([30.0] + [max(1.0, s / 4) for s in limits])
        while True:
            await asyncio.sleep(every_s)
            for unit in self.units:
                if unit.station is not None and unit.state is State.RUNNING:
                    try:
                        await tend(unit.station)
                    except Exception:
                        log.exception("station %s: periodic care failed; tried again in "
                                      "%.0f s", unit.id, every_s)

    async def _shutdown(self) -> None:
        self.state = State.STOPPING
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
            ended = await asyncio.gather(*(cancel_and_wait(t, "shutdown drain timeout",
                                                           limit_s=CANCEL_LIMIT_S)
                                           for t in pending))
            for task, gone in zip(pending, ended, strict=True):
                if not gone:
                    log.error("drain: %s did not end %.0f s after being cancelled; "
                              "leaving it", task.get_name(), CANCEL_LIMIT_S)
            await asyncio.gather(*(t for t in tasks if t.done()), return_exceptions=True)
        await asyncio.gather(*(u.close_parts(self.timeouts.sinks_s) for u in self.units))
        for unit in self.units:
            if unit.state in (State.RUNNING, State.RESTARTING, State.STARTING):
                unit.state = State.STOPPED
        await self.models.aclose()
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.probes is not None:
            try:
                await asyncio.wait_for(self.probes.stop(), self.timeouts.probes_s)
            except TimeoutError:
                log.warning("probes: server not stopped after %.0f s", self.timeouts.probes_s)
        self.state = State.STOPPED
        log.info("%d station(s) stopped", len(self.units))


def _named(station_id: str, err: ListenerError) -> ListenerError:
    """``err`` naming its station, once (most errors already start with it)."""
    text = str(err)
    return ListenerError(text if text.startswith(f"station {station_id}:")
                         else f"station {station_id}: {text}")


def run_stations(configs: Sequence[Config | StationPlan], *, quorum: int = 1,
                 keep_going: bool = False, skipped: Sequence[tuple[Path, str]] = ()) -> int:
    """``listener run``: run the stations until stopped; the exit status for the CLI."""
    return asyncio.run(Runner(configs, quorum=quorum, keep_going=keep_going,
                              skipped=skipped).run())
