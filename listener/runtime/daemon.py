"""A lone station as the tests, the demo and replay hold it: a fleet of one.

:class:`Daemon` is a few lines over :class:`~listener.runtime.runner.Runner`
(the one runner ``listener run`` uses too) with one config, and names the
station's parts for the callers that look at them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from listener.config import Config
from listener.errors import ListenerError
from listener.events.emitter import Emitter
from listener.metrics import Metrics
from listener.model.backends.base import ModelBackend
from listener.pipeline.station import StationPipeline
from listener.runtime.builder import Station, StationOptions
from listener.runtime.models import ModelRegistry, WindowScorer
from listener.runtime.runner import Runner, Timeouts
from listener.runtime.sdnotify import SystemdNotifier
from listener.runtime.unit import State

__all__ = ["Daemon", "State", "Timeouts"]


class Daemon(Runner):
    """One station: ``await Daemon(cfg).run()`` returns the exit status.

    ``scorer``/``backends``: models handed in (tests, benchmarks); the other
    arguments are :class:`Runner`'s. A lone station is not restarted after a
    failure unless ``options`` says so (it exits 1, as a unit under systemd).
    """

    def __init__(self, cfg: Config, *, scorer: WindowScorer | None = None,
                 backends: dict[str, ModelBackend] | None = None,
                 registry: CollectorRegistry | None = None, timeouts: Timeouts | None = None,
                 options: StationOptions | None = None,
                 notifier: SystemdNotifier | None = None) -> None:
        options = options or StationOptions(restart_on_failure=False)
        if cfg.stream is None and options.source is None:
            raise ListenerError(f"station {cfg.station.id}: the config has no 'stream' "
                                "section; `listener run` needs one (see config/example.yaml)")
        models = ModelRegistry(scorer=scorer, backends=backends,
                               allow_random_weights=options.allow_random_weights)
        super().__init__([cfg], models=models, registry=registry, timeouts=timeouts,
                         options=options, notifier=notifier)
        self.cfg = cfg

    @property
    def station(self) -> Station | None:
        """The station's parts (still there after the run, for a look)."""
        if not self.units:
            return None
        unit = self.units[0]
        return unit.station if unit.station is not None else unit.closed

    @property
    def metrics(self) -> Metrics | None:
        return self.units[0].metrics if self.units else None

    @property
    def pipeline(self) -> StationPipeline | None:
        return self.station.pipeline if self.station is not None else None

    @property
    def emitter(self) -> Emitter | None:
        return self.station.emitter if self.station is not None else None
