"""Where each model's clips go, by role, and how models agree.

Every model of a station (the primary too) hands its clips to a
:class:`LaneEmitter`: the agreement record, then that model's own
:class:`~listener.events.emitter.Emitter` over the sinks of its role.

Roles (``models[].role``):

* ``primary``: every sink (the station's :class:`~listener.events.emitter.Emitter`);
* ``secondary``: the JSON lines file, OrcaHello records and their clip
  audio/spectrogram (the record's ``audioUri``/``imageUri`` name those files):
  a second opinion the moderators see, never a webhook or log alert;
* ``shadow``: the JSON lines file only (and metrics): scored and recorded to
  compare a candidate model, never reaching anyone.

:class:`Agreement` lines up every model's decision on the station's clip grid
and, once each model decided a clip, counts agreement per model pair and
writes an agreement record (which models fired).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from listener.appendlog import AppendFile
from listener.detection.labels import ClipLabels, LabelledClip
from listener.detection.rule import ClipResult
from listener.events.records import iso_utc
from listener.events.sinks import Sink
from listener.metrics import Metrics

log = logging.getLogger(__name__)

#: Sinks each non-primary role reaches (by sink name).
ROLE_SINKS = {"shadow": frozenset({"jsonl"}),
              "secondary": frozenset({"jsonl", "orcahello", "clips"})}
# Clips waiting for the other models' decision; older ones are given up on
# (a lane that dropped its backlog never decides them).
_MAX_PENDING = 512


def sinks_for_role(role: str, sinks: Sequence[Sink]) -> list[Sink]:
    """The sinks a model of ``role`` writes to (all of them for the primary)."""
    allowed = ROLE_SINKS.get(role)
    return list(sinks) if allowed is None else [s for s in sinks if s.name in allowed]


class Agreement:
    """Which models fired on each clip, and the per-pair agreement counters.

    Args:
        station: the station id (into the records).
        model_ids: every model, primary first.
        metrics: where ``listener_detect_agreement_total`` is counted.
        path: the agreement JSON lines file; None writes none.
    """

    def __init__(self, station: str, model_ids: Sequence[str], metrics: Metrics,
                 path: Path | None) -> None:
        self.station = station
        self.model_ids = tuple(model_ids)
        self.metrics = metrics
        self.path = path
        self._file = AppendFile(path) if path is not None else None
        self._pending: OrderedDict[tuple[str, float], dict[str, ClipResult]] = OrderedDict()
        self.records: list[dict[str, Any]] = []  # the latest few, for probes and tests

    def observe(self, model_id: str, clip: ClipResult, stream_key: str) -> None:
        key = (stream_key, round(clip.start_s, 3))
        seen = self._pending.setdefault(key, {})
        seen[model_id] = clip
        if len(seen) == len(self.model_ids):
            del self._pending[key]
            self._decided(stream_key, seen)
        while len(self._pending) > _MAX_PENDING:
            self._pending.popitem(last=False)

    def _decided(self, stream_key: str, clips: dict[str, ClipResult]) -> None:
        fired = {m: clips[m].detected for m in self.model_ids}
        for a, b in itertools.combinations(self.model_ids, 2):
            fa, fb = fired[a], fired[b]
            outcome = "both" if fa and fb else "only_a" if fa else "only_b" if fb else "neither"
            self.metrics.agreement(a, b, outcome)
        first = clips[self.model_ids[0]]
        record = {"kind": "agreement", "station": self.station, "stream_key": stream_key,
                  "utc_start": iso_utc(first.utc_start), "start_s": round(first.start_s, 3),
                  "end_s": round(first.end_s, 3),
                  "fired": [m for m in self.model_ids if fired[m]],
                  "models": {m: {"detected": fired[m], "confidence": clips[m].confidence}
                             for m in self.model_ids},
                  "agree": len(set(fired.values())) == 1}
        self.records = [*self.records[-99:], record]
        if self._file is None:
            return
        try:  # survives rotation and deletion (logrotate), as every appended file does
            self._file.append((json.dumps(record, separators=(",", ":")) + "\n").encode())
        except OSError as err:
            log.error("cannot write the agreement record to %s: %s", self.path, err)


    def close(self) -> None:
        """Close the agreement file (at shutdown)."""
        if self._file is not None:
            self._file.close()


class ClipTarget(Protocol):
    """Takes one model's clips (its :class:`~listener.events.emitter.Emitter`, or
    replay's range filter around it); True once the clip's records are durable."""

    async def clip(self, clip: ClipResult, stream_key: str,
                   labels: ClipLabels | None = None) -> bool: ...


class LaneEmitter:
    """One model's clips -> the agreement record and its own emitter (or its wrapper).

    Args:
        target: the model's emitter, or what wraps it.
        agreement: the station's agreement across models (None with one model).
        keep: which clips count for the agreement (replay: those in its range).
        labelled: pass the model's labels into the records (a primary ResNet's
            records carry none, as OrcaHello's do).
    """

    def __init__(self, target: ClipTarget, agreement: Agreement | None = None,
                 keep: Callable[[ClipResult], bool] | None = None, *,
                 labelled: bool = False) -> None:
        self.target = target
        self.agreement = agreement
        self.keep = keep
        self.labelled = labelled

    async def labelled_clip(self, clip: LabelledClip, stream_key: str) -> bool:
        if self.agreement is not None and (self.keep is None or self.keep(clip.clip)):
            self.agreement.observe(clip.model_id, clip.clip, stream_key)
        return await self.target.clip(clip.clip, stream_key,
                                      clip.labels if self.labelled else None)
