"""Every metric listener exports, built on an injected registry.

One :class:`Metrics` per station process. Each metric carries a ``station``
label; the children for that station (and for every fixed label value such
as ``kind`` or ``reason``) are bound once in ``__init__`` so that call sites
are plain attribute access (``m.segments_fetched.inc()``) and every series
exists, at zero, from the first scrape: ``rate()`` and ``increase()`` alerts
then work without waiting for the first event.

Names follow ``listener_<subsystem>_<name>_<unit>``; counters end in
``_total``; latencies are histograms. :data:`METRIC_NAMES` lists every family
as it appears in PromQL (counters with ``_total``, the info metric with
``_info``) so dashboards and alert rules can be checked against it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

logger = logging.getLogger(__name__)

FETCH_KINDS: Final = ("playlist", "segment")
DROP_REASONS: Final = ("gap", "backlog", "decode_error")
RESTART_REASONS: Final = ("start", "discontinuity", "gap", "failure")
BUILD_INFO_LABELS: Final = ("version", "model_id", "architecture", "device", "precision",
                            "weights_sha256")

# HLS fetches go over the internet to S3: tens of ms when healthy, up to the
# read timeout (15 s default) when not.
FETCH_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128)
# One batch of 2 s windows: milliseconds on a GPU, up to seconds on a small CPU.
INFERENCE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: Every metric family by the name PromQL queries, with its Prometheus type.
METRIC_TYPES: Final[dict[str, str]] = {
    "listener_hls_segments_fetched_total": "counter",
    "listener_hls_segments_failed_total": "counter",
    "listener_hls_fetched_bytes_total": "counter",
    "listener_hls_fetch_duration_seconds": "histogram",
    "listener_hls_playlist_errors_total": "counter",
    "listener_hls_gaps_total": "counter",
    "listener_hls_last_segment_timestamp_seconds": "gauge",
    "listener_audio_decoded_seconds_total": "counter",
    "listener_audio_scored_seconds_total": "counter",
    "listener_audio_dropped_seconds_total": "counter",
    "listener_audio_decoder_restarts_total": "counter",
    "listener_stream_lag_seconds": "gauge",
    "listener_stream_backlog_seconds": "gauge",
    "listener_inference_batch_size": "histogram",
    "listener_inference_duration_seconds": "histogram",
    "listener_inference_windows_scored_total": "counter",
    "listener_detect_clips_total": "counter",
    "listener_detect_detections_total": "counter",
    "listener_detect_encounters_total": "counter",
    "listener_detect_last_clip_confidence": "gauge",
    "listener_sink_deliveries_total": "counter",
    "listener_sink_failures_total": "counter",
    "listener_sink_outbox_depth": "gauge",
    "listener_build_info": "info",
    "listener_model_loaded": "gauge",
}

#: Every metric family name, as used in PromQL.
METRIC_NAMES: Final[tuple[str, ...]] = tuple(METRIC_TYPES)

_HISTOGRAM_SUFFIXES: Final = ("_bucket", "_sum", "_count")


def family_of(series: str) -> str | None:
    """The family in :data:`METRIC_NAMES` that a PromQL series name belongs to.

    ``listener_inference_duration_seconds_bucket`` -> ``listener_inference_duration_seconds``;
    ``None`` for a name listener never exports (a typo in a dashboard).
    """
    if series in METRIC_TYPES:
        return series
    for suffix in _HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and METRIC_TYPES.get(base) == "histogram":
            return base
    return None


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")


@dataclass(frozen=True, slots=True)
class SinkMetrics:
    """The bound children for one event sink (``jsonl``, ``webhook``, ...)."""

    deliveries: Counter
    failures: Counter
    outbox_depth: Gauge


class Metrics:
    """All metrics of one station, registered on ``registry``.

    Args:
        registry: where to register; tests pass a fresh ``CollectorRegistry``.
        station: the station id, the value of the ``station`` label everywhere.
    """

    def __init__(self, registry: CollectorRegistry, station: str) -> None:
        self.registry = registry
        self.station = station
        st = ("station",)
        r = registry

        # --- hls --------------------------------------------------------
        self._segments_fetched = Counter(
            "listener_hls_segments_fetched_total",
            "HLS media segments downloaded successfully.", st, registry=r)
        self._segments_failed = Counter(
            "listener_hls_segments_failed_total",
            "HLS media segments that could not be downloaded after retries.", st, registry=r)
        self._fetched_bytes = Counter(
            "listener_hls_fetched_bytes_total",
            "Bytes downloaded from the HLS origin, by kind (playlist or segment).",
            (*st, "kind"), registry=r)
        self._fetch_duration = Histogram(
            "listener_hls_fetch_duration_seconds",
            "Wall time of one successful HLS download (including retries), by kind.",
            (*st, "kind"), buckets=FETCH_BUCKETS, registry=r)
        self._playlist_errors = Counter(
            "listener_hls_playlist_errors_total",
            "Playlist polls that failed (fetch error, parse error, too large).", st, registry=r)
        self._gaps = Counter(
            "listener_hls_gaps_total",
            "Times the stream skipped media sequence numbers (audio lost upstream).",
            st, registry=r)
        self._last_segment_ts = Gauge(
            "listener_hls_last_segment_timestamp_seconds",
            "Unix time of the end of the newest HLS segment fetched.", st, registry=r)

        self.segments_fetched = self._segments_fetched.labels(station)
        self.segments_failed = self._segments_failed.labels(station)
        self.fetched_bytes = {k: self._fetched_bytes.labels(station, k) for k in FETCH_KINDS}
        self.fetch_duration = {k: self._fetch_duration.labels(station, k) for k in FETCH_KINDS}
        self.playlist_errors = self._playlist_errors.labels(station)
        self.gaps = self._gaps.labels(station)
        self.last_segment_timestamp = self._last_segment_ts.labels(station)

        # --- audio ------------------------------------------------------
        self._decoded = Counter(
            "listener_audio_decoded_seconds_total",
            "Seconds of audio decoded from the stream.", st, registry=r)
        self._scored = Counter(
            "listener_audio_scored_seconds_total",
            "Seconds of audio scored by the model.", st, registry=r)
        self._dropped = Counter(
            "listener_audio_dropped_seconds_total",
            "Seconds of audio never scored, by reason (gap, backlog, decode_error).",
            (*st, "reason"), registry=r)
        self._restarts = Counter(
            "listener_audio_decoder_restarts_total",
            "ffmpeg decoder (re)starts, by reason (start, discontinuity, gap, failure).",
            (*st, "reason"), registry=r)

        self.decoded_seconds = self._decoded.labels(station)
        self.scored_seconds = self._scored.labels(station)
        self.dropped_seconds = {k: self._dropped.labels(station, k) for k in DROP_REASONS}
        self.decoder_restarts = {k: self._restarts.labels(station, k) for k in RESTART_REASONS}

        # --- stream -----------------------------------------------------
        self._lag = Gauge(
            "listener_stream_lag_seconds",
            "Live edge time minus the time of the newest scored audio.", st, registry=r)
        self._backlog = Gauge(
            "listener_stream_backlog_seconds",
            "Seconds of audio decoded but not yet scored.", st, registry=r)
        self.lag_seconds = self._lag.labels(station)
        self.backlog_seconds = self._backlog.labels(station)

        # --- inference --------------------------------------------------
        self._batch_size = Histogram(
            "listener_inference_batch_size",
            "Windows per inference batch.", st, buckets=BATCH_SIZE_BUCKETS, registry=r)
        self._inference_duration = Histogram(
            "listener_inference_duration_seconds",
            "Wall time of one inference batch (frontend + model).", st,
            buckets=INFERENCE_BUCKETS, registry=r)
        self._windows_scored = Counter(
            "listener_inference_windows_scored_total",
            "Audio windows scored by the model.", st, registry=r)
        self.batch_size = self._batch_size.labels(station)
        self.inference_duration = self._inference_duration.labels(station)
        self.windows_scored = self._windows_scored.labels(station)

        # --- detect -----------------------------------------------------
        self._clips = Counter(
            "listener_detect_clips_total",
            "Clips the decision rule was applied to.", st, registry=r)
        self._detections = Counter(
            "listener_detect_detections_total",
            "Clips judged to contain killer-whale calls.", st, registry=r)
        self._encounters = Counter(
            "listener_detect_encounters_total",
            "Encounters (detections separated by more than encounter_gap_s).", st, registry=r)
        self._last_confidence = Gauge(
            "listener_detect_last_clip_confidence",
            "Confidence (0..1) of the most recently decided clip.", st, registry=r)
        self.clips = self._clips.labels(station)
        self.detections = self._detections.labels(station)
        self.encounters = self._encounters.labels(station)
        self.last_clip_confidence = self._last_confidence.labels(station)

        # --- sinks (children bound per sink by sink_metrics) -------------
        self._sink_deliveries = Counter(
            "listener_sink_deliveries_total",
            "Detection records delivered, by sink.", (*st, "sink"), registry=r)
        self._sink_failures = Counter(
            "listener_sink_failures_total",
            "Failed delivery attempts, by sink (each retry counts).", (*st, "sink"), registry=r)
        self._sink_outbox = Gauge(
            "listener_sink_outbox_depth",
            "Records waiting in a sink's outbox for (re)delivery.", (*st, "sink"), registry=r)
        self._sinks: dict[str, SinkMetrics] = {}

        # --- info -------------------------------------------------------
        # Info rather than a gauge with label values: calling info() again
        # (model reloaded) replaces the label set instead of leaving a stale
        # second series behind.
        self._build = Info(
            "listener_build", "Version of listener and of the loaded model.", st, registry=r)
        self._model_loaded = Gauge(
            "listener_model_loaded",
            "1 when the model weights are loaded and warmed up, else 0.", st, registry=r)
        self.model_loaded = self._model_loaded.labels(station)

    # --- helpers for labelled metrics ------------------------------------

    def observe_fetch(self, kind: str, nbytes: int, seconds: float) -> None:
        """Record one successful download of ``kind`` ('playlist' or 'segment')."""
        _check(kind, FETCH_KINDS, "fetch kind")
        self.fetched_bytes[kind].inc(nbytes)
        self.fetch_duration[kind].observe(seconds)

    def drop(self, reason: str, seconds: float) -> None:
        """Count ``seconds`` of audio that will never be scored, for ``reason``."""
        _check(reason, DROP_REASONS, "drop reason")
        self.dropped_seconds[reason].inc(seconds)

    def decoder_restart(self, reason: str) -> None:
        """Count one decoder (re)start for ``reason``."""
        _check(reason, RESTART_REASONS, "restart reason")
        self.decoder_restarts[reason].inc()

    def sink_metrics(self, sink: str) -> SinkMetrics:
        """The bound children of one sink; created at zero on the first call."""
        bound = self._sinks.get(sink)
        if bound is None:
            bound = SinkMetrics(
                deliveries=self._sink_deliveries.labels(self.station, sink),
                failures=self._sink_failures.labels(self.station, sink),
                outbox_depth=self._sink_outbox.labels(self.station, sink),
            )
            self._sinks[sink] = bound
        return bound

    def set_build_info(self, **labels: str) -> None:
        """Set ``listener_build_info``; keys must be those in :data:`BUILD_INFO_LABELS`.

        Missing keys are exported as empty strings so the label set is stable.
        """
        unknown = sorted(set(labels) - set(BUILD_INFO_LABELS))
        if unknown:
            raise ValueError(f"unknown build info label(s) {unknown}; "
                             f"expected some of {', '.join(BUILD_INFO_LABELS)}")
        values = {k: str(labels.get(k, "")) for k in BUILD_INFO_LABELS}
        self._build.labels(self.station).info(values)
        logger.debug("build info for %s: %s", self.station, values)

    @staticmethod
    def names() -> list[str]:
        """Every metric family name (same as :data:`METRIC_NAMES`)."""
        return list(METRIC_NAMES)
