"""The HTTP server's connection table as Prometheus metrics, read at each scrape.

A collector rather than counters incremented at each event: the table
(:class:`~listener.web.guard.Connections`) already counts, so the scrape
reads its numbers and nothing can drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from listener.metrics import CONNECTION_DROP_REASONS, SERVER_METRIC_SPECS
from listener.web.guard import Connections


class ConnectionMetrics(Collector):
    """``listener_web_connections_open`` and ``..._dropped_total{reason}`` of one table."""

    def __init__(self, table: Connections) -> None:
        self.table = table

    def collect(self) -> Iterator[Metric]:
        open_spec, dropped_spec = SERVER_METRIC_SPECS
        yield GaugeMetricFamily(open_spec.name, open_spec.help, value=len(self.table.open))
        dropped = CounterMetricFamily(dropped_spec.name.removesuffix("_total"),
                                      dropped_spec.help, labels=dropped_spec.labels)
        for reason in CONNECTION_DROP_REASONS:  # every reason at zero from the start
            dropped.add_metric([reason], self.table.dropped[reason])
        yield dropped
