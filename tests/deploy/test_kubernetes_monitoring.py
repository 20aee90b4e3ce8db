"""deploy/kubernetes/monitoring: the PodMonitor and the alert rules, promtool where installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from support.k8s_layout import K8S, OVERLAYS, ROOT, Obj, one
from support.kustomize import KUSTOMIZE_CMD, NO_KUSTOMIZE, render

pytestmark = pytest.mark.skipif(KUSTOMIZE_CMD is None, reason=NO_KUSTOMIZE)


# --- monitoring ------------------------------------------------------------------------

def test_podmonitor_scrapes_the_pods(rendered: dict[Path, list[Obj]]) -> None:
    pm = one(rendered[K8S / "monitoring"], "PodMonitor")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    endpoints = pm["spec"]["podMetricsEndpoints"]
    assert [(e["port"], e["path"]) for e in endpoints] == [("metrics", "/metrics")]
    assert "podTargetLabels" not in pm["spec"]  # would clash with the daemon's `station`
    workloads = [one(rendered[o], "Deployment") for o in OVERLAYS]
    workloads += [one(render(K8S / "fleet" / v), "StatefulSet") for v in ("live", "live-gpu")]
    for workload in workloads:
        pod = workload["spec"]["template"]
        assert selects(pm["spec"]["selector"], pod["metadata"]["labels"]), \
            workload["metadata"]["name"]
        ports = [p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])]
        assert "metrics" in ports, workload["metadata"]["name"]


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against pod labels."""
    ops = {"In": lambda k, v: labels.get(k) in v, "NotIn": lambda k, v: labels.get(k) not in v,
           "Exists": lambda k, _: k in labels, "DoesNotExist": lambda k, _: k not in labels}
    return (selector.get("matchLabels", {}).items() <= labels.items()
            and all(ops[e["operator"]](e["key"], e.get("values", []))
                    for e in selector.get("matchExpressions", [])))


def alert_rules(rendered: dict[Path, list[Obj]]) -> list[Obj]:
    rule = one(rendered[K8S / "monitoring"], "PrometheusRule")
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_every_alert_is_documented(rendered: dict[Path, list[Obj]]) -> None:
    rules = alert_rules(rendered)
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    expected = {"ListenerDown", "ListenerStreamStalled", "ListenerLagHigh",
                "ListenerAudioDropped", "ListenerSinkFailing", "ListenerOutboxGrowing",
                "ListenerRestarting", "ListenerNoPipelineActivity", "ListenerModelNotLoaded"}
    assert expected <= set(names)
    anchors = github_anchors((ROOT / "docs" / "operations.md").read_text(encoding="utf-8"))
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        assert notes["runbook_url"] == f"docs/operations.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in anchors, f"no section {rule['alert']} in operations.md"


# --- promtool, where installed ----------------------------------------------------------

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)")


def _rules_file(rendered: dict[Path, list[Obj]], path: Path, annotations: bool) -> Path:
    groups = one(rendered[K8S / "monitoring"], "PrometheusRule")["spec"]["groups"]
    if not annotations:
        # Unit tests below check when alerts fire, not their wording.
        groups = [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"}
                                  for r in g["rules"]]} for g in groups]
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    return path


def test_the_silent_stream_alert_uses_the_consoles_threshold(rendered: dict[Path, list[Obj]],
                                                             ) -> None:
    from listener.audio.level import SILENT_DBFS
    groups = one(rendered[K8S / "monitoring"], "PrometheusRule")["spec"]["groups"]
    rule = next(r for g in groups for r in g["rules"] if r.get("alert") == "ListenerAudioSilent")
    assert f"listener_audio_level_dbfs[15m])) < {SILENT_DBFS:g}" in rule["expr"]
    rule = next(r for g in groups for r in g["rules"]
                if r.get("alert") == "ListenerAudioOutsideModelLevels")
    assert f"listener_audio_level_dbfs[30m])) > {SILENT_DBFS:g})" in rule["expr"]


@needs_promtool
def test_promtool_check_rules(rendered: dict[Path, list[Obj]], tmp_path: Path) -> None:
    assert PROMTOOL is not None
    rules = _rules_file(rendered, tmp_path / "rules.yml", annotations=True)
    result = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# Series are per minute; `a+bxN` = N+1 samples from a, step b; `_` = missing.
PROMTOOL_TESTS = [
    # The console refuses connections at the cap: fires on the first refusals, not before.
    {"interval": "1m",
     "input_series": [
         {"series": 'listener_web_connections_dropped_total{reason="cap",instance="i"}',
          "values": "0x20 3 7 7x20"}],
     "alert_rule_test": [
         {"eval_time": "15m", "alertname": "ListenerConsoleRefusing", "exp_alerts": []},
         {"eval_time": "23m", "alertname": "ListenerConsoleRefusing",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "instance": "i",
                                         "reason": "cap"}}]},
         {"eval_time": "40m", "alertname": "ListenerConsoleRefusing", "exp_alerts": []}]},
    # A stream that stops: nothing for the first 35 min, then fires after `for: 5m`.
    {"interval": "1m",
     "input_series": [
         {"series": 'listener_hls_segments_fetched_total{station="s"}', "values": "0+6x20 120x40"},
         {"series": 'listener_inference_windows_scored_total{station="s"}',
          "values": "0+60x20 1200x40"}],
     "alert_rule_test": [
         {"eval_time": "30m", "alertname": "ListenerStreamStalled", "exp_alerts": []},
         {"eval_time": "45m", "alertname": "ListenerStreamStalled",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "station": "s"}}]},
         # Nothing scored, but nothing fetched either: the stream, not the pipeline.
         {"eval_time": "45m", "alertname": "ListenerNoPipelineActivity", "exp_alerts": []}]},
    # Segments arrive but nothing is scored: a wedged pipeline.
    {"interval": "1m",
     "input_series": [
         {"series": 'listener_hls_segments_fetched_total{station="s"}', "values": "0+6x60"},
         {"series": 'listener_inference_windows_scored_total{station="s"}',
          "values": "0+60x10 600x50"}],
     "alert_rule_test": [
         {"eval_time": "20m", "alertname": "ListenerNoPipelineActivity", "exp_alerts": []},
         {"eval_time": "40m", "alertname": "ListenerNoPipelineActivity",
          "exp_alerts": [{"exp_labels": {"severity": "critical", "station": "s"}}]},
         {"eval_time": "40m", "alertname": "ListenerStreamStalled", "exp_alerts": []}]},
    # A stream of digital silence: decoded, never above -100 dBFS; a quiet live one never fires.
    {"interval": "1m",
     "input_series": [
         {"series": 'listener_audio_level_dbfs{station="dead"}', "values": "-60x10 -120x40"},
         {"series": 'listener_audio_level_dbfs{station="quiet"}', "values": "-80x50"},
         {"series": 'listener_audio_decoded_seconds_total{station="dead"}', "values": "0+60x50"},
         {"series": 'listener_audio_decoded_seconds_total{station="quiet"}',
          "values": "0+60x50"}],
     "alert_rule_test": [
         {"eval_time": "20m", "alertname": "ListenerAudioSilent", "exp_alerts": []},
         {"eval_time": "35m", "alertname": "ListenerAudioSilent",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "station": "dead"}}]}]},
    # A stream quieter than the model trained at (-81 dBFS) for 35 min fires; one back
    # inside does not; silence is ListenerAudioSilent's, not this alert's.
    {"interval": "1m",
     "input_series": [
         {"series": 'listener_audio_level_dbfs{station="quiet"}', "values": "-60x10 -90x50"},
         {"series": 'listener_audio_level_dbfs{station="loud"}', "values": "2x30 -20x30"},
         {"series": 'listener_audio_level_dbfs{station="dead"}', "values": "-120x60"},
         *({"series": f'listener_model_trained_level_dbfs{{station="{st}",model="demo",'
                      f'bound="{bound}"}}', "values": f"{value}x60"}
           for st in ("quiet", "loud", "dead") for bound, value in (("low", -81), ("high", -1)))],
     "alert_rule_test": [
         {"eval_time": "30m", "alertname": "ListenerAudioOutsideModelLevels",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "station": "loud",
                                         "model": "demo", "bound": "high"}}]},
         {"eval_time": "48m", "alertname": "ListenerAudioOutsideModelLevels",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "station": "quiet",
                                         "model": "demo", "bound": "low"}}]}]},
    # Lag: high for long enough; growing steadily.
    {"interval": "1m",
     "input_series": [
         {"series": 'listener_stream_lag_seconds{station="s"}', "values": "100+10x90"}],
     "alert_rule_test": [
         {"eval_time": "10m", "alertname": "ListenerLagHigh", "exp_alerts": []},
         {"eval_time": "40m", "alertname": "ListenerLagHigh",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "station": "s"}}]},
         {"eval_time": "70m", "alertname": "ListenerLagGrowing",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "station": "s"}}]}]},
    # Model never loaded; a sink that fails and an outbox that never empties.
    {"interval": "1m",
     "input_series": [
         {"series": 'listener_model_loaded{station="s"}', "values": "0x30"},
         {"series": 'listener_model_loaded{station="ok"}', "values": "0 1x30"},
         {"series": 'listener_sink_failures_total{station="s",sink="webhook"}',
          "values": "0+2x60"},
         {"series": 'listener_sink_deliveries_total{station="s",sink="webhook"}',
          "values": "5x60"},
         {"series": 'listener_sink_outbox_depth{station="s",sink="webhook"}',
          "values": "1+1x60"}],
     "alert_rule_test": [
         {"eval_time": "20m", "alertname": "ListenerModelNotLoaded",
          "exp_alerts": [{"exp_labels": {"severity": "critical", "station": "s"}}]},
         {"eval_time": "40m", "alertname": "ListenerSinkFailing",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "station": "s",
                                         "sink": "webhook"}}]},
         {"eval_time": "40m", "alertname": "ListenerOutboxGrowing",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "station": "s",
                                         "sink": "webhook"}}]}]},
    # Audio dropped for a backlog; gaps upstream.
    {"interval": "1m",
     "input_series": [
         {"series": 'listener_audio_dropped_seconds_total{station="s",reason="backlog"}',
          "values": "0+5x60"},
         {"series": 'listener_audio_dropped_seconds_total{station="s",reason="gap"}',
          "values": "0x60"}],
     "alert_rule_test": [
         {"eval_time": "30m", "alertname": "ListenerAudioDropped",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "station": "s",
                                         "reason": "backlog"}}]}]},
    # Prometheus cannot scrape; kube-state-metrics sees restarts.
    {"interval": "1m",
     "input_series": [
         {"series": 'up{job="listener/listener",instance="10.0.0.1:9108"}', "values": "1x5 0x20"},
         {"series": 'kube_pod_container_status_restarts_total{container="listener",pod="p"}',
          "values": "0 0 1 2 3 4 5x20"}],
     "alert_rule_test": [
         {"eval_time": "15m", "alertname": "ListenerDown",
          "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "listener/listener",
                                         "instance": "10.0.0.1:9108"}}]},
         {"eval_time": "10m", "alertname": "ListenerRestarting",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "container": "listener",
                                         "pod": "p"}}]}]},
]


@needs_promtool
def test_promtool_alert_unit_tests(rendered: dict[Path, list[Obj]], tmp_path: Path) -> None:
    assert PROMTOOL is not None
    rules = _rules_file(rendered, tmp_path / "rules.yml", annotations=False)
    spec = {"rule_files": [rules.name], "evaluation_interval": "1m", "tests": PROMTOOL_TESTS}
    tests = tmp_path / "tests.yml"
    tests.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    result = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True,
                            text=True, timeout=60, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
