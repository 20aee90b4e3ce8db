"""The console's parts for one station: view, observer, coverage ledger and status.

The runner (composition root) makes one :class:`StationConsole` per station
when its HTTP endpoint is enabled, passes :attr:`StationConsole.observer` to
the station builder, hands the pipeline's audio history over once it exists,
and gives :func:`fleet_console` to the web server. The console reads the
running station through :class:`RunningStation` only.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from listener import __version__
from listener.audio.history import AudioHistory
from listener.audio.level import LevelRange
from listener.config import Config
from listener.events.records import iso_utc
from listener.metrics import RESTART_REASONS, Metrics
from listener.pipeline.contracts import PipelineStats
from listener.web.console import Console
from listener.web.coverage import CoverageLedger
from listener.web.security import load_token
from listener.web.views import ConsoleObserver, LiveFeed, StationView


class RunningStation(Protocol):
    """What the status page reads from a running station (the runner's station unit)."""

    @property
    def state(self) -> enum.Enum: ...

    @property
    def live_edge_utc(self) -> datetime | None: ...

    @property
    def model_info(self) -> Mapping[str, Any]: ...

    @property
    def last_error(self) -> dict[str, Any] | None: ...

    @property
    def running_since(self) -> float | None: ...

    def pipeline_stats(self) -> PipelineStats | None: ...

    def readiness(self) -> tuple[bool, str]: ...


class WithConsole(Protocol):
    @property
    def console(self) -> StationConsole | None: ...


@dataclass
class StationConsole:
    """One station's console parts (see the module doc)."""

    cfg: Config
    metrics: Metrics
    view: StationView
    observer: ConsoleObserver

    def attach_history(self, history: AudioHistory | None) -> None:
        """The pipeline's audio ring, for the live spectrogram (``None``: scores only)."""
        self.view.live.history = history

    def web(self, bind_host: str) -> Console:
        """The console for the web server; reads the review token (``ConfigError``)."""
        return Console([self.view], bind_host=bind_host, token=load_token())

    def close(self) -> None:
        """Write the coverage ledger's open span (at shutdown)."""
        if self.view.coverage is not None:
            self.view.coverage.flush()


def fleet_console(stations: Sequence[WithConsole], bind_host: str,
                  skipped: Sequence[tuple[str, str]] = ()) -> Console:
    """The console over every station's view; reads the review token (``ConfigError``).

    ``skipped``: config files left out at start (``--keep-going``) and why.
    """
    views = [s.console.view for s in stations if s.console is not None]
    return Console(views, bind_host=bind_host, token=load_token(), skipped=skipped)


def station_console(cfg: Config, metrics: Metrics, daemon: RunningStation) -> StationConsole:
    """Build the view, ledger and observer for ``cfg``'s station."""
    outputs = cfg.outputs
    coverage = CoverageLedger.for_station(cfg.state.dir, cfg.station.id)
    coverage.bind_metric(metrics.coverage_scored_ratio)
    live = LiveFeed(None)
    view = StationView(
        cfg.station.id, lambda: station_status(cfg, metrics, daemon), live,
        events_path=Path(outputs.jsonl.path) if outputs.jsonl is not None else None,
        clips_dir=Path(outputs.clips.dir) if outputs.clips is not None else None,
        coverage=coverage, threshold=cfg.detection.local_threshold)
    return StationConsole(cfg, metrics, view, ConsoleObserver(live, coverage,
                                                              cfg.detection.hop_s))


def _stream_url(cfg: Config) -> str | None:
    s = cfg.stream
    if s is None:
        return None
    return s.url if s.kind == "hls" else f"{s.base_url.rstrip('/')}/{s.node}/latest.txt"


def _level(dbfs: float | None) -> float | None:
    """The gauge for JSON: NaN (nothing decoded yet) is ``None``."""
    return round(dbfs, 1) if dbfs is not None and math.isfinite(dbfs) else None


def _outside(outside: tuple[tuple[LevelRange, str], ...]) -> list[dict[str, Any]]:
    """The models whose trained levels the stream stays outside of, for JSON."""
    return [{"model": r.model, "side": side,
             "trained_dbfs": [round(r.low_dbfs, 1), round(r.high_dbfs, 1)]}
            for r, side in outside]


def _value(child: Any) -> float:
    """A bound metric child's value (a counter's ``_total``).

    Read from the child itself: ``registry.get_sample_value`` collects the whole
    registry a fleet shares (coverage gauges included), once per value read.
    """
    return float(next(iter(child.collect())).samples[0].value)


def station_status(cfg: Config, metrics: Metrics, daemon: RunningStation) -> dict[str, Any]:
    """The status page's snapshot: JSON-able, ``None`` for what is not known yet."""
    ready, reason = daemon.readiness()
    stats = daemon.pipeline_stats()
    edge = daemon.live_edge_utc
    now = time.monotonic()
    info: Mapping[str, Any] = daemon.model_info
    error = daemon.last_error  # {"message", "text", "active", "for_s", "age_s"} or None
    restarts = sum(_value(metrics.decoder_restarts[r])
                   for r in RESTART_REASONS if r != "start")  # not the first start
    return {
        "name": cfg.station.name, "state": str(daemon.state.value), "ready": ready,
        "readiness": reason, "stream_url": _stream_url(cfg),
        "live_edge_utc": iso_utc(edge),
        "lag_s": _value(metrics.lag_seconds),
        "audio_level_dbfs": _level(_value(metrics.audio_level)),
        "level_outside": _outside(stats.level_outside) if stats else [],
        "last_segment_s_ago": round(now - stats.last_segment_mono, 1)
        if stats and stats.last_segment_mono is not None else None,
        "last_scored_utc": iso_utc(stats.last_scored_utc) if stats else None,
        "backlog_s": stats.backlog_s if stats else None,
        "windows_scored": stats.windows_scored if stats else 0,
        "decoder_restarts": int(restarts),
        "running_since": daemon.running_since,  # unix time this run started, None if not
        "last_error": error,
        "model": {"id": cfg.model.model_id, "architecture": info.get("architecture"),
                  "device": info.get("device"),
                  "precision": info.get("precision") or info.get("dtype"),
                  "weights": str(info.get("sha256") or "")[:16] or None},
        "version": __version__,
        "clips_folder": str(cfg.outputs.clips.dir) if cfg.outputs.clips else None,
        "events_file": str(cfg.outputs.jsonl.path) if cfg.outputs.jsonl else None,
        "now_utc": iso_utc(datetime.now(UTC)),
    }
