"""listener.metrics: names follow the conventions, values reach a scrape."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from listener.metrics import (
    BUILD_INFO_LABELS,
    DROP_REASONS,
    FETCH_KINDS,
    METRIC_NAMES,
    METRIC_TYPES,
    RESTART_REASONS,
    SERVER_METRIC_SPECS,
    STATION_METRIC_NAMES,
    Metrics,
    family_of,
)

NAME_RE = re.compile(r"^listener_[a-z]+(_[a-z0-9]+)+$")
SUBSYSTEMS = {"hls", "audio", "stream", "inference", "detect", "sink", "build", "model",
              "coverage", "web"}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def scrape(registry: CollectorRegistry) -> dict[tuple[str, frozenset], float]:
    """Every sample of a text-format scrape, keyed by (name, labels)."""
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_name_follows_conventions(name: str) -> None:
    assert NAME_RE.match(name), name
    assert name.split("_")[1] in SUBSYSTEMS, name
    kind = METRIC_TYPES[name]
    if kind == "counter":
        assert name.endswith("_total"), name
    else:
        assert not name.endswith("_total"), name
    if "duration" in name or "lag" in name or "backlog" in name or "timestamp" in name:
        assert name.endswith("_seconds"), name
    if kind == "info":
        assert name.endswith("_info"), name


def test_names_match_what_is_registered() -> None:
    registry = CollectorRegistry()
    Metrics(registry, "lab")
    suffix = {"counter": "_total", "info": "_info"}
    registered = {fam.name + suffix.get(fam.type, "") for fam in registry.collect()}
    assert registered == set(STATION_METRIC_NAMES)
    assert len(METRIC_NAMES) == len(set(METRIC_NAMES))
    assert Metrics.names() == list(STATION_METRIC_NAMES)
    assert set(METRIC_NAMES) == {*STATION_METRIC_NAMES, *(s.name for s in SERVER_METRIC_SPECS)}


def test_latencies_are_histograms() -> None:
    for name in ("listener_hls_fetch_duration_seconds", "listener_inference_duration_seconds",
                 "listener_inference_batch_size"):
        assert METRIC_TYPES[name] == "histogram"


def test_every_series_is_labelled_with_station_and_exists_at_zero() -> None:
    registry = CollectorRegistry()
    Metrics(registry, "orcasound_lab")
    samples = scrape(registry)
    assert samples
    for (name, labels), _ in samples.items():
        assert ("station", "orcasound_lab") in labels, name
    # Fixed label values are pre-created so rate() alerts work from the start.
    for kind in FETCH_KINDS:
        key = ("listener_hls_fetched_bytes_total",
               frozenset({("station", "orcasound_lab"), ("kind", kind)}))
        assert samples[key] == 0
    for reason in DROP_REASONS:
        key = ("listener_audio_dropped_seconds_total",
               frozenset({("station", "orcasound_lab"), ("reason", reason)}))
        assert samples[key] == 0
    for reason in RESTART_REASONS:
        key = ("listener_audio_decoder_restarts_total",
               frozenset({("station", "orcasound_lab"), ("reason", reason)}))
        assert samples[key] == 0


def test_values_appear_in_a_scrape() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry, "lab")
    m.segments_fetched.inc()
    m.segments_fetched.inc()
    m.observe_fetch("segment", 1000, 0.3)
    m.drop("backlog", 2.5)
    m.decoder_restart("gap")
    m.lag_seconds.set(12.5)
    m.batch_size.observe(16)
    m.inference_duration.observe(0.02)
    m.last_clip_confidence.set(0.75)
    sink = m.sink_metrics("webhook")
    sink.deliveries.inc()
    sink.outbox_depth.set(3)
    assert m.sink_metrics("webhook") is sink
    m.set_build_info(version="0.1.0", model_id="orcahello-srkw", device="cpu")
    m.model_loaded.set(1)

    st = ("station", "lab")
    s = scrape(registry)
    assert s[("listener_hls_segments_fetched_total", frozenset({st}))] == 2
    assert s[("listener_hls_fetched_bytes_total", frozenset({st, ("kind", "segment")}))] == 1000
    assert s[("listener_hls_fetch_duration_seconds_count",
              frozenset({st, ("kind", "segment")}))] == 1
    assert s[("listener_audio_dropped_seconds_total",
              frozenset({st, ("reason", "backlog")}))] == 2.5
    assert s[("listener_audio_decoder_restarts_total", frozenset({st, ("reason", "gap")}))] == 1
    assert s[("listener_stream_lag_seconds", frozenset({st}))] == 12.5
    assert s[("listener_inference_batch_size_bucket", frozenset({st, ("le", "16.0")}))] == 1
    assert s[("listener_inference_batch_size_bucket", frozenset({st, ("le", "8.0")}))] == 0
    assert s[("listener_detect_last_clip_confidence", frozenset({st}))] == 0.75
    assert s[("listener_sink_deliveries_total", frozenset({st, ("sink", "webhook")}))] == 1
    assert s[("listener_sink_outbox_depth", frozenset({st, ("sink", "webhook")}))] == 3
    assert s[("listener_model_loaded", frozenset({st}))] == 1
    info = {("version", "0.1.0"), ("model_id", "orcahello-srkw"), ("device", "cpu"),
            ("architecture", ""), ("precision", ""), ("weights_sha256", "")}
    assert s[("listener_build_info", frozenset({st, *info}))] == 1


def test_build_info_is_replaced_not_duplicated() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry, "lab")
    m.set_build_info(version="1", device="cpu")
    m.set_build_info(version="1", device="cuda")
    infos = [k for k in scrape(registry) if k[0] == "listener_build_info"]
    assert len(infos) == 1
    assert ("device", "cuda") in infos[0][1]


def test_bad_label_values_are_rejected_with_the_value() -> None:
    m = Metrics(CollectorRegistry(), "lab")
    with pytest.raises(ValueError, match="'oops'"):
        m.drop("oops", 1.0)
    with pytest.raises(ValueError, match="'manifest'"):
        m.observe_fetch("manifest", 1, 0.1)
    with pytest.raises(ValueError, match="'crash'"):
        m.decoder_restart("crash")
    with pytest.raises(ValueError, match="colour"):
        m.set_build_info(colour="red")


def test_two_stations_can_share_nothing_but_a_process() -> None:
    # Each Metrics registers its families: one per registry, as the daemon does.
    a, b = CollectorRegistry(), CollectorRegistry()
    Metrics(a, "one").gaps.inc()
    Metrics(b, "two")
    assert scrape(a)[("listener_hls_gaps_total", frozenset({("station", "one")}))] == 1
    assert scrape(b)[("listener_hls_gaps_total", frozenset({("station", "two")}))] == 0


def test_family_of_maps_series_to_families() -> None:
    assert family_of("listener_hls_gaps_total") == "listener_hls_gaps_total"
    assert (family_of("listener_inference_duration_seconds_bucket")
            == "listener_inference_duration_seconds")
    assert family_of("listener_inference_batch_size_sum") == "listener_inference_batch_size"
    assert family_of("listener_hls_gaps_total_bucket") is None  # counters have no buckets
    assert family_of("listener_nope_total") is None


def test_build_info_labels_are_the_documented_ones() -> None:
    assert BUILD_INFO_LABELS == ("version", "model_id", "architecture", "device",
                                 "precision", "weights_sha256")


def test_every_metric_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    missing = [n for n in METRIC_NAMES if f"`{n}" not in text]
    assert not missing, f"not in docs/metrics.md: {missing}"
