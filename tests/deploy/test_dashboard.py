"""The Grafana dashboard and the alert rules query only metrics listener exports.

Every PromQL expression (dashboard panels, the station variable, and the
rules in deploy/kubernetes/monitoring/prometheusrule.yaml) is reduced to the
metric names it selects; each ``listener_*`` name, less a histogram's
``_bucket``/``_sum``/``_count``, must be in ``listener.metrics.METRIC_NAMES``.
kube-state-metrics' ``kube_*`` and Prometheus' own ``up`` are the only
others allowed. Where the ``promql-parser`` package is importable each
expression is also parsed, and the names its syntax tree selects must equal
the ones found here.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from listener.metrics import METRIC_NAMES

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "listener-dashboard.json"
RULES = ROOT / "deploy" / "kubernetes" / "monitoring" / "prometheusrule.yaml"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Series that Prometheus or kube-state-metrics make, not listener.
FOREIGN = re.compile(r"kube_\w+|up")

# Grafana's variables, replaced by something PromQL accepts before parsing.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h",
                "${station}": "x", "$station": "x"}

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                 # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)                           # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)                          # range / subquery
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)",
                  " ", text)                                         # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def family(name: str) -> str:
    """The metric family a series name belongs to (histogram suffixes stripped)."""
    if name in METRIC_NAMES:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in METRIC_NAMES:
            return name.removesuffix(suffix)
    return name


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))  # collapsed rows nest theirs


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for panel in _walk_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            assert inner, f"variable {var['name']}: {query}"
            out.append((f"variable {var['name']}", inner.group(1)))
    return out


def rule_exprs() -> list[tuple[str, str]]:
    spec = yaml.safe_load(RULES.read_text(encoding="utf-8"))["spec"]
    return [(f"alert {r['alert']}", r["expr"]) for g in spec["groups"] for r in g["rules"]]


def all_exprs() -> list[tuple[str, str]]:
    return dashboard_exprs(json.loads(DASHBOARD.read_text(encoding="utf-8"))) + rule_exprs()


def test_metric_names_is_populated() -> None:
    assert len(METRIC_NAMES) >= 20
    assert all(n.startswith("listener_") for n in METRIC_NAMES)


def test_extractor_on_known_expressions() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, station) '
            '(rate(listener_inference_duration_seconds_bucket{station=~"$station"}[5m])))')
    assert metric_names(expr) == {"listener_inference_duration_seconds_bucket"}
    expr = ('rate(a_total[15m]) == 0 and on (station) rate(b_total{x="or"}[15m]) > 0 '
            "or time() - c > 900")
    assert metric_names(expr) == {"a_total", "b_total", "c"}


@pytest.mark.parametrize(("where", "expr"), all_exprs(), ids=lambda v: str(v)[:60])
def test_every_metric_exists(where: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{where}: selects no metric: {expr}"
    for name in names:
        if FOREIGN.fullmatch(name):
            continue
        assert name.startswith("listener_"), f"{where}: {name} is not a listener metric"
        assert family(name) in METRIC_NAMES, f"{where}: {name} is not exported by listener"


def test_histogram_suffixes_only_on_histograms() -> None:
    types: dict[str, str] | None = getattr(importlib.import_module("listener.metrics"),
                                           "METRIC_TYPES", None)
    if types is None:
        pytest.skip("listener.metrics has no METRIC_TYPES")
    for where, expr in all_exprs():
        for name in metric_names(expr):
            base = family(name)
            if base != name:
                assert types[base] == "histogram", f"{where}: {name} on a {types[base]}"


def test_promql_parses() -> None:
    parser = pytest.importorskip("promql_parser",
                                 reason="promql-parser not installed (pip install promql-parser)")
    for where, expr in all_exprs():
        text = expr
        for var, value in GRAFANA_VARS.items():
            text = text.replace(var, value)
        try:
            tree = parser.parse(text)
        except Exception as err:  # the parser raises plain ValueError/RuntimeError
            pytest.fail(f"{where}: does not parse: {err}\n{expr}")
        assert _selected(tree) == metric_names(expr), where


def _selected(node: Any) -> set[str]:
    """Metric names of every VectorSelector in a promql_parser tree."""
    names: set[str] = set()
    if type(node).__name__ == "VectorSelector" and getattr(node, "name", None):
        names.add(node.name)
    for attr in ("expr", "lhs", "rhs", "vector_selector", "param"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            names |= _selected(child)
    for child in getattr(node, "args", None) or []:
        names |= _selected(child)
    return names


# --- the dashboard itself -------------------------------------------------------------

def test_dashboard_basics(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in _walk_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    station = variables["station"]
    assert station["type"] == "query" and station["includeAll"] and station["multi"]
    assert "label_values(" in json.dumps(station["query"]) and ", station)" in \
        json.dumps(station["query"])
    assert variables["datasource"]["query"] == "prometheus"


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_panel_filters_by_station(dashboard: dict[str, Any]) -> None:
    for where, expr in dashboard_exprs(dashboard):
        if where.startswith("panel"):
            for selector in re.findall(r"listener_\w+(\{[^}]*\})?", expr):
                assert 'station=~"$station"' in selector, f"{where}: {expr}"


REQUIRED_ON_DASHBOARD = {
    "listener_stream_lag_seconds", "listener_audio_scored_seconds_total",
    "listener_audio_dropped_seconds_total", "listener_hls_segments_fetched_total",
    "listener_hls_segments_failed_total", "listener_hls_gaps_total",
    "listener_inference_duration_seconds", "listener_inference_batch_size",
    "listener_inference_windows_scored_total", "listener_detect_detections_total",
    "listener_detect_encounters_total", "listener_sink_deliveries_total",
    "listener_sink_failures_total", "listener_sink_outbox_depth",
    "listener_audio_decoder_restarts_total", "listener_model_loaded", "listener_build_info",
}


def test_dashboard_covers_the_pipeline(dashboard: dict[str, Any]) -> None:
    used = {family(n) for _, e in dashboard_exprs(dashboard) for n in metric_names(e)}
    assert REQUIRED_ON_DASHBOARD - used == set()
    quantiles = {float(q) for _, e in dashboard_exprs(dashboard)
                 for q in re.findall(r"histogram_quantile\(([\d.]+),.*?"
                                     r"listener_inference_duration_seconds_bucket", e)}
    assert {0.5, 0.95} <= quantiles
