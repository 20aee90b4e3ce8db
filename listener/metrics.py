"""Every metric listener exports, built on an injected registry.

One :class:`Metrics` per station. Each station metric carries a ``station``
label; the children for that station (and for every fixed label value such
as ``kind`` or ``reason``) are bound once in ``__init__`` so that call sites
are plain attribute access (``m.segments_fetched.inc()``) and every series
exists, at zero, from the first scrape: ``rate()`` and ``increase()`` alerts
then work without waiting for the first event.

Names follow ``listener_<subsystem>_<name>_<unit>``; counters end in
``_total``; latencies are histograms. :data:`METRIC_NAMES` lists every family
as it appears in PromQL (counters with ``_total``, the info metric with
``_info``) so dashboards and alert rules can be checked against it. The
process's one HTTP server adds :data:`SERVER_METRIC_SPECS`, without a
``station`` label (its connections belong to no station).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

logger = logging.getLogger(__name__)

FETCH_KINDS: Final = ("playlist", "segment")
DROP_REASONS: Final = ("gap", "backlog", "decode_error", "undecodable", "duplicate",
                        "short_segment", "excess_audio")
RESTART_REASONS: Final = ("start", "discontinuity", "gap", "failure", "codec_change",
                           "reanchor")
AGREEMENT_OUTCOMES: Final = ("both", "only_a", "only_b", "neither")
CONNECTION_DROP_REASONS: Final = ("cap", "client_cap", "evicted", "head_timeout", "head_too_large",
                                  "bad_request_line", "write_timeout", "idle_timeout")
BUILD_INFO_LABELS: Final = ("version", "model_id", "architecture", "device", "precision",
                            "weights_sha256")

# HLS fetches go over the internet to S3: tens of ms when healthy, up to the
# read timeout (15 s default) when not.
FETCH_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128)
# One batch of 2 s windows: milliseconds on a GPU, up to seconds on a small CPU.
INFERENCE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family: its PromQL name, type, help and labels beyond ``station``."""

    name: str
    kind: str  # counter | gauge | histogram | info
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


#: Every metric family listener exports: the one place each name is written.
METRIC_SPECS: Final[tuple[MetricSpec, ...]] = (
    MetricSpec("listener_hls_segments_fetched_total", "counter",
               "HLS media segments downloaded successfully."),
    MetricSpec("listener_hls_segments_failed_total", "counter",
               "HLS media segments that could not be downloaded after retries."),
    MetricSpec("listener_hls_fetched_bytes_total", "counter",
               "Bytes downloaded from the HLS origin, by kind (playlist or segment).", ("kind",)),
    MetricSpec("listener_hls_fetch_duration_seconds", "histogram",
               "Wall time of one successful HLS download (including retries), by kind.",
               ("kind",), FETCH_BUCKETS),
    MetricSpec("listener_hls_playlist_errors_total", "counter",
               "Playlist polls that failed (fetch error, parse error, too large)."),
    MetricSpec("listener_hls_gaps_total", "counter",
               "Times the stream skipped media sequence numbers (audio lost upstream)."),
    MetricSpec("listener_hls_last_segment_timestamp_seconds", "gauge",
               "Unix time of the end of the newest HLS segment fetched."),
    MetricSpec("listener_audio_decoded_seconds_total", "counter",
               "Seconds of audio decoded from the stream."),
    MetricSpec("listener_audio_scored_seconds_total", "counter",
               "Seconds of audio scored by the model."),
    MetricSpec("listener_audio_dropped_seconds_total", "counter",
               "Seconds of audio never scored, by reason (gap, backlog, decode_error, undecodable, "
               "duplicate, short_segment, excess_audio).",
               ("reason",)),
    MetricSpec("listener_audio_decoder_restarts_total", "counter",
               "ffmpeg decoder (re)starts, by reason (start, discontinuity, gap, failure, "
               "codec_change, reanchor).",
               ("reason",)),
    MetricSpec("listener_audio_nonfinite_samples_total", "counter",
               "Decoded samples that were NaN or infinite, scored as 0 (docs/frontend.md)."),
    MetricSpec("listener_audio_level_dbfs", "gauge",
               "RMS level of the last 10 s of decoded audio, dB re full scale (digital "
               "silence reads -120; NaN until audio is decoded)."),
    MetricSpec("listener_stream_lag_seconds", "gauge",
               "Live edge time minus the time of the newest scored audio."),
    MetricSpec("listener_stream_backlog_seconds", "gauge",
               "Seconds of audio decoded but not yet scored."),
    MetricSpec("listener_coverage_scored_ratio", "gauge",
               "Fraction of the last hour of stream time decoded and scored (coverage ledger)."),
    MetricSpec("listener_inference_batch_size", "histogram",
               "Windows per inference batch.", (), BATCH_SIZE_BUCKETS),
    MetricSpec("listener_inference_duration_seconds", "histogram",
               "Wall time of one inference batch (frontend + model).", (), INFERENCE_BUCKETS),
    MetricSpec("listener_inference_windows_scored_total", "counter",
               "Audio windows scored by the model."),
    MetricSpec("listener_detect_clips_total", "counter",
               "Clips the decision rule was applied to."),
    MetricSpec("listener_detect_detections_total", "counter",
               "Clips judged to contain killer-whale calls."),
    MetricSpec("listener_detect_encounters_total", "counter",
               "Encounters (detections separated by more than encounter_gap_s)."),
    MetricSpec("listener_detect_model_clips_total", "counter",
               "Clips each configured model decided, by model id and role.", ("model", "role")),
    MetricSpec("listener_detect_model_detections_total", "counter",
               "Positive clips of each configured model, by model id and role.",
               ("model", "role")),
    MetricSpec("listener_detect_agreement_total", "counter",
               "Clips two models both decided, by model pair and outcome (both, only_a, only_b, "
               "neither).", ("model_a", "model_b", "outcome")),
    MetricSpec("listener_detect_last_clip_confidence", "gauge",
               "Confidence of the most recently decided clip, 0..1 (the records' 0..100 / 100)."),
    MetricSpec("listener_sink_deliveries_total", "counter",
               "Detection records delivered, by sink.", ("sink",)),
    MetricSpec("listener_sink_failures_total", "counter",
               "Failed delivery attempts, by sink (each retry counts).", ("sink",)),
    MetricSpec("listener_sink_outbox_depth", "gauge",
               "Records waiting in a sink's outbox for (re)delivery.", ("sink",)),
    # Info rather than a gauge with label values: calling info() again (model
    # reloaded) replaces the label set instead of leaving a stale second series.
    MetricSpec("listener_build_info", "info", "Version of listener and of the loaded model."),
    MetricSpec("listener_model_loaded", "gauge",
               "1 when the model weights are loaded and warmed up, else 0."),
    MetricSpec("listener_model_trained_level_dbfs", "gauge",
               "Window levels each model trained at (its recipe), dB re full scale, by model "
               "and bound (low, high); absent for weights that record none.",
               ("model", "bound")),
)

#: The HTTP server's families (console, /metrics, probes): one server per process.
SERVER_METRIC_SPECS: Final[tuple[MetricSpec, ...]] = (
    MetricSpec("listener_web_connections_open", "gauge",
               "Connections open to the HTTP server (console, /metrics, probes)."),
    MetricSpec("listener_web_connections_dropped_total", "counter",
               "Connections the HTTP server refused or closed itself, by reason "
               f"({', '.join(CONNECTION_DROP_REASONS)}).", ("reason",)),
)

#: Every metric family by the name PromQL queries, with its Prometheus type.
METRIC_TYPES: Final[dict[str, str]] = {s.name: s.kind
                                       for s in (*METRIC_SPECS, *SERVER_METRIC_SPECS)}

#: Every metric family name, as used in PromQL.
METRIC_NAMES: Final[tuple[str, ...]] = tuple(METRIC_TYPES)

#: The families each station registers (:class:`Metrics`).
STATION_METRIC_NAMES: Final[tuple[str, ...]] = tuple(s.name for s in METRIC_SPECS)

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


class MetricFamilies:
    """Every family of :data:`METRIC_SPECS`, registered once on ``registry``.

    A process that runs several stations shares one instance; each station
    binds its own children through :class:`Metrics`.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._by_name = {s.name: _family(s, registry) for s in METRIC_SPECS}

    def __getitem__(self, name: str) -> Any:
        return self._by_name[name]


def _family(spec: MetricSpec, registry: CollectorRegistry) -> Any:
    labels = ("station", *spec.labels)
    if spec.kind == "counter":
        return Counter(spec.name, spec.help, labels, registry=registry)
    if spec.kind == "gauge":
        return Gauge(spec.name, spec.help, labels, registry=registry)
    if spec.kind == "histogram":
        return Histogram(spec.name, spec.help, labels, buckets=spec.buckets, registry=registry)
    # prometheus-client appends "_info" itself.
    return Info(spec.name.removesuffix("_info"), spec.help, labels, registry=registry)


class Metrics:
    """All metrics of one station, its children bound once.

    Args:
        registry: where to register (tests pass a fresh ``CollectorRegistry``),
            or the :class:`MetricFamilies` shared with other stations.
        station: the station id, the value of the ``station`` label everywhere.
    """

    def __init__(self, registry: CollectorRegistry | MetricFamilies, station: str) -> None:
        fam = registry if isinstance(registry, MetricFamilies) else MetricFamilies(registry)
        self.families = fam
        self.registry = fam.registry
        self.station = station

        def one(name: str) -> Any:
            return fam[name].labels(station)

        def each(name: str, values: tuple[str, ...]) -> dict[str, Any]:
            return {v: fam[name].labels(station, v) for v in values}

        self.segments_fetched = one("listener_hls_segments_fetched_total")
        self.segments_failed = one("listener_hls_segments_failed_total")
        self.fetched_bytes = each("listener_hls_fetched_bytes_total", FETCH_KINDS)
        self.fetch_duration = each("listener_hls_fetch_duration_seconds", FETCH_KINDS)
        self.playlist_errors = one("listener_hls_playlist_errors_total")
        self.gaps = one("listener_hls_gaps_total")
        self.last_segment_timestamp = one("listener_hls_last_segment_timestamp_seconds")
        self.decoded_seconds = one("listener_audio_decoded_seconds_total")
        self.scored_seconds = one("listener_audio_scored_seconds_total")
        self.dropped_seconds = each("listener_audio_dropped_seconds_total", DROP_REASONS)
        self.decoder_restarts = each("listener_audio_decoder_restarts_total", RESTART_REASONS)
        self.nonfinite_samples = one("listener_audio_nonfinite_samples_total")
        self.audio_level = one("listener_audio_level_dbfs")
        self.audio_level.set(math.nan)  # nothing decoded yet: no level, not 0 dBFS
        self.lag_seconds = one("listener_stream_lag_seconds")
        self.backlog_seconds = one("listener_stream_backlog_seconds")
        self.batch_size = one("listener_inference_batch_size")
        self.inference_duration = one("listener_inference_duration_seconds")
        self.windows_scored = one("listener_inference_windows_scored_total")
        self.clips = one("listener_detect_clips_total")
        self.detections = one("listener_detect_detections_total")
        self.encounters = one("listener_detect_encounters_total")
        self.last_clip_confidence = one("listener_detect_last_clip_confidence")
        self.model_loaded = one("listener_model_loaded")
        # Set by the coverage ledger (CoverageLedger.bind_metric), computed per scrape.
        self.coverage_scored_ratio = one("listener_coverage_scored_ratio")
        self._sinks: dict[str, SinkMetrics] = {}

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
            fam = self.families
            bound = SinkMetrics(
                deliveries=fam["listener_sink_deliveries_total"].labels(self.station, sink),
                failures=fam["listener_sink_failures_total"].labels(self.station, sink),
                outbox_depth=fam["listener_sink_outbox_depth"].labels(self.station, sink),
            )
            self._sinks[sink] = bound
        return bound

    def model_counters(self, model: str, role: str) -> tuple[Counter, Counter]:
        """(clips, detections) counters of one configured model."""
        fam = self.families
        return (fam["listener_detect_model_clips_total"].labels(self.station, model, role),
                fam["listener_detect_model_detections_total"].labels(self.station, model, role))

    def model_trained_levels(self, model: str, low_dbfs: float, high_dbfs: float) -> None:
        """Export the window levels ``model`` trained at (compare ``audio_level``)."""
        fam = self.families["listener_model_trained_level_dbfs"]
        fam.labels(self.station, model, "low").set(low_dbfs)
        fam.labels(self.station, model, "high").set(high_dbfs)

    def agreement(self, model_a: str, model_b: str, outcome: str) -> None:
        """Count one clip that models ``model_a`` and ``model_b`` both decided."""
        _check(outcome, AGREEMENT_OUTCOMES, "agreement outcome")
        self.families["listener_detect_agreement_total"].labels(
            self.station, model_a, model_b, outcome).inc()

    def set_build_info(self, **labels: str) -> None:
        """Set ``listener_build_info``; keys must be those in :data:`BUILD_INFO_LABELS`.

        Missing keys are exported as empty strings so the label set is stable.
        """
        unknown = sorted(set(labels) - set(BUILD_INFO_LABELS))
        if unknown:
            raise ValueError(f"unknown build info label(s) {unknown}; "
                             f"expected some of {', '.join(BUILD_INFO_LABELS)}")
        values = {k: str(labels.get(k, "")) for k in BUILD_INFO_LABELS}
        self.families["listener_build_info"].labels(self.station).info(values)
        logger.debug("build info for %s: %s", self.station, values)

    @staticmethod
    def names() -> list[str]:
        """Every family a station registers (:data:`STATION_METRIC_NAMES`)."""
        return list(STATION_METRIC_NAMES)
