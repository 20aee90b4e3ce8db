"""Which stations one process runs: config files or folders, loaded, checked and sharded.

``listener run --config A.yaml --config B.yaml`` or ``--config DIR/`` (every
``*.yaml``/``*.yml`` in it, by name). ``--shard i/N`` keeps the stations whose
id hashes to ``i`` modulo ``N``: a replica of a StatefulSet passes its ordinal
and needs nothing else. Hashing the id (rather than numbering the sorted
list) means adding or removing a station never moves the others to another
replica, whose volume does not hold their resume state.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from listener.config import Config, load_config, with_every_model
from listener.errors import ConfigError, ListenerError
from listener.model.backends.check import StationPlan, plan_station
from listener.model.bundled import with_weights

log = logging.getLogger(__name__)

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
CONFIG_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Shard:
    """Part ``index`` of ``count`` (0-based, as a StatefulSet ordinal)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"2/8"`` -> ``Shard(2, 8)``; ListenerError naming ``--shard`` otherwise."""
        match = _SHARD.match(text)
        if match is None:
            raise ListenerError(f"--shard {text!r}: expected INDEX/COUNT, e.g. 0/4")
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1 or index >= count:
            raise ListenerError(f"--shard {text}: the index must be 0..COUNT-1 and COUNT >= 1")
        return cls(index, count)

    def owns(self, key: str) -> bool:
        """True when ``key`` (a station id) belongs to this shard."""
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class StationEntry:
    """One station's planned config and the file it came from."""

    plan: StationPlan
    path: Path

    @property
    def cfg(self) -> Config:
        return self.plan.cfg


@dataclass(frozen=True)
class Roster:
    """The stations to run, and the files skipped (with ``--keep-going``) and why."""

    stations: list[StationEntry]
    skipped: list[tuple[Path, str]]


def config_files(paths: Sequence[str | Path]) -> list[Path]:
    """Each path as given; a folder becomes its ``*.yaml``/``*.yml`` files, by name.

    Raises:
        ListenerError: a path does not exist, or a folder holds no config file.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.suffix in CONFIG_SUFFIXES and p.is_file())
            if not found:
                raise ListenerError(f"{path}: no station config (*.yaml, *.yml) in this folder")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise ListenerError(f"{path}: no such config file or folder")
    return files


def plan_file(path: str | Path, *, device: str | None = None) -> StationPlan:
    """One config file loaded and planned as ``listener run`` does (``check-config`` too).

    ``device`` (``run --device``) replaces ``device`` of every model before planning.

    Raises:
        ListenerError: the file does not load, or its models cannot be planned.
    """
    # The model id shown is the one the checkpoint declares, unless the config sets it.
    cfg = with_weights(load_config(path))
    return plan_station(cfg if device is None else with_every_model(cfg, device=device))


def load_roster(paths: Sequence[str | Path], *, keep_going: bool = False,
                shard: Shard | None = None, device: str | None = None) -> Roster:
    """Load and plan every config; check station ids are unique; keep this shard's stations.

    A file that does not load is fatal (its error names the file), or with
    ``keep_going`` is logged and skipped. ``device`` is as :func:`plan_file`'s.

    Raises:
        ListenerError: a bad file (without ``keep_going``), two files with one
            station id, or no station left to run.
    """
    stations: list[StationEntry] = []
    skipped: list[tuple[Path, str]] = []
    seen: dict[str, Path] = {}
    for path in config_files(paths):
        try:
            plan = plan_file(path, device=device)
            cfg = plan.cfg
            if cfg.station.id in seen:
                raise ConfigError(f"station.id {cfg.station.id!r} is also the id in "
                                  f"{seen[cfg.station.id]}; each station needs its own",
                                  path=str(path))
        except ListenerError as err:
            if not keep_going:
                raise
            log.error("skipping %s (--keep-going): %s", path, err)
            skipped.append((path, str(err)))
            continue
        seen[cfg.station.id] = path
        if shard is None or shard.owns(cfg.station.id):
            stations.append(StationEntry(plan, path))
    if not stations:
        where = f" in shard {shard}" if shard is not None else ""
        raise ListenerError(f"no station to run{where} (from {len(seen)} config(s)"
                            f"{f', {len(skipped)} skipped' if skipped else ''})")
    return Roster(stations, skipped)


