"""The sink protocol and the metrics hooks it reports to.

A sink turns an :class:`~listener.events.records.Event` into something outside the
process: a line in a file, an HTTP POST, a clip on disk. The contract:

* ``await sink.start()`` once, on the running loop, before the first event
  (the webhook resumes delivering its outbox here);
* ``await sink.emit(event)`` for every event; it raises only
  :class:`~listener.errors.SinkError`, and :func:`emit_all` logs and counts
  that, so one broken sink never stops the others or the daemon;
* ``await sink.close(timeout_s)`` at shutdown: flush what can be flushed in
  ``timeout_s`` and leave the rest on disk.

Blocking I/O runs in ``asyncio.to_thread`` so the event loop keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from listener.errors import SinkError
from listener.events.records import Event

logger = logging.getLogger(__name__)


class CounterLike(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class GaugeLike(Protocol):
    def set(self, value: float) -> None: ...


class SinkMetricsLike(Protocol):
    """What a sink reports to; :class:`listener.metrics.SinkMetrics` fits."""

    @property
    def deliveries(self) -> CounterLike: ...

    @property
    def failures(self) -> CounterLike: ...

    @property
    def outbox_depth(self) -> GaugeLike: ...


MetricsHook = Callable[[str], SinkMetricsLike]
"""``hook(sink_name)`` -> that sink's metrics, e.g. ``metrics.sink_metrics``."""


class SinkMetricsSource(Protocol):
    """Has a ``sink_metrics(name)`` method (:class:`listener.metrics.Metrics`)."""

    def sink_metrics(self, sink: str) -> SinkMetricsLike: ...


def as_hook(source: MetricsHook | SinkMetricsSource | None) -> MetricsHook | None:
    """Accept either the bound method or the object that has it."""
    if source is None or callable(source):
        return source
    return source.sink_metrics


class Sink(Protocol):
    """An event destination.

    ``reports_own_deliveries`` is True for sinks that finish their work after
    ``emit`` returns (outbox, background writes) and count deliveries and
    failures themselves. ``durable`` is True for the records a detection is
    not accepted without (JSON lines, OrcaHello records, the webhook outbox):
    the emitter keeps and retries what they refused, and the resume point
    waits for them.
    """

    name: str
    reports_own_deliveries: bool
    durable: bool

    async def start(self) -> None: ...

    async def emit(self, event: Event) -> None: ...

    async def close(self, timeout_s: float) -> None: ...


async def emit_all(sinks: Sequence[Sink], event: Event,
                   metrics: MetricsHook | SinkMetricsSource | None = None) -> int:
    """Give ``event`` to every sink in order; return how many failed."""
    return len(await emit_each(sinks, event, metrics))


async def emit_each(sinks: Sequence[Sink], event: Event,
                    metrics: MetricsHook | SinkMetricsSource | None = None) -> list[Sink]:
    """Give ``event`` to every sink in order; return the sinks that failed.

    A failure is logged and counted, never raised: detection must go on even
    when the disk is full or the webhook is down. Cancellation propagates.
    """
    hook = as_hook(metrics)
    failed: list[Sink] = []
    for sink in sinks:
        try:
            await sink.emit(event)
        except SinkError as err:
            failed.append(sink)
            logger.warning("sink %s failed on event %s (%s): %s",
                           sink.name, event.id, event.kind, err)
        except Exception:
            # A bug in a sink, not an I/O problem: log the traceback, keep going.
            failed.append(sink)
            logger.exception("sink %s crashed on event %s (%s)", sink.name, event.id, event.kind)
        else:
            if hook is not None and not sink.reports_own_deliveries:
                hook(sink.name).deliveries.inc()
            continue
        if hook is not None:
            hook(sink.name).failures.inc()
    return failed
