"""The alert rules across a pod restart, with promtool.

A restarted pod is a new scrape target: its series carry a new ``instance``
(and ``pod``) while the old pod's stay inside every range window for the
window's length. Each test below restarts the pod at minute 30 (old
instance 10.0.0.1 until 30m, new instance 10.0.0.2 from 31m) and checks the
rule neither errors (many-to-many joins), nor fires on the dead pod's series,
nor loses counts split between the two pods. Skips where promtool is absent.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "kubernetes" / "monitoring" / "prometheusrule.yaml"
PROMTOOL = shutil.which("promtool")
RESTART_MIN = 30
OLD, NEW = "10.0.0.1:9108", "10.0.0.2:9108"

pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)")


def old(name: str, labels: str, values: str) -> dict[str, str]:
    """The old pod's series: ``values`` from 0m up to the restart."""
    return {"series": f'{name}{{{labels},job="listener/listener",instance="{OLD}"}}',
            "values": values}


def new(name: str, labels: str, values: str) -> dict[str, str]:
    """The new pod's series: nothing up to the restart, then ``values`` from 31m."""
    return {"series": f'{name}{{{labels},job="listener/listener",instance="{NEW}"}}',
            "values": "_ " * (RESTART_MIN + 1) + values}


def alert(at: str, name: str, *labels: dict[str, str]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name,
            "exp_alerts": [{"exp_labels": {"severity": "warning", **x}} for x in labels]}


ST = 'station="s"'
SINK = 'station="s",sink="webhook"'
LEVEL, TRAINED = "listener_audio_level_dbfs", "listener_model_trained_level_dbfs"
FETCHED, SCORED = "listener_hls_segments_fetched_total", "listener_inference_windows_scored_total"

# Series are per minute; `a+bxN` = N+1 samples from a, step b.
RESTART_TESTS: list[dict[str, Any]] = [
    # Both pods' levels are in the 30 min window: one join per station, not an error.
    {"input_series": [
        old(LEVEL, ST, "-90x30"), new(LEVEL, ST, "-90x40"),
        *(f(TRAINED, f'{ST},model="demo",bound="{bound}"', f"{value}x{n}")
          for f, n in ((old, 30), (new, 40)) for bound, value in (("low", -81), ("high", -1)))],
     "alert_rule_test": [alert("60m", "ListenerAudioOutsideModelLevels",
                               {"station": "s", "model": "demo", "bound": "low"})]},
    # The old pod's last record left at once by the new pod: not a stuck outbox.
    {"input_series": [
        old("listener_sink_outbox_depth", SINK, "0x28 1 1"),
        new("listener_sink_outbox_depth", SINK, "0x60")],
     "alert_rule_test": [alert("45m", "ListenerOutboxGrowing"),
                         alert("59m", "ListenerOutboxGrowing")]},
    # An outbox that stays full across the restart still fires, once, for the station.
    {"input_series": [
        old("listener_sink_outbox_depth", SINK, "1+1x30"),
        new("listener_sink_outbox_depth", SINK, "31+1x40")],
     "alert_rule_test": [alert("50m", "ListenerOutboxGrowing",
                               {"station": "s", "sink": "webhook"})]},
    # A silent stream that comes back with the new pod.
    {"input_series": [
        old(LEVEL, ST, "-120x30"), new(LEVEL, ST, "-60x30"),
        old("listener_audio_decoded_seconds_total", ST, "0+60x30"),
        new("listener_audio_decoded_seconds_total", ST, "0+60x30")],
     "alert_rule_test": [alert("38m", "ListenerAudioSilent")]},
    # A wedged pipeline the restart cured.
    {"input_series": [
        old(FETCHED, ST, "0+6x30"), old(SCORED, ST, "0x30"),
        new(FETCHED, ST, "0+6x30"), new(SCORED, ST, "0+60x30")],
     "alert_rule_test": [alert("38m", "ListenerNoPipelineActivity")]},
    # A stalled stream that came back with the new pod.
    {"input_series": [old(FETCHED, ST, "0x30"), new(FETCHED, ST, "0+6x30")],
     "alert_rule_test": [alert("38m", "ListenerStreamStalled")]},
    # A failing sink the new pod delivers to.
    {"input_series": [
        old("listener_sink_failures_total", SINK, "0+2x30"),
        old("listener_sink_deliveries_total", SINK, "5x30"),
        new("listener_sink_failures_total", SINK, "0x30"),
        new("listener_sink_deliveries_total", SINK, "0+3x30")],
     "alert_rule_test": [alert("38m", "ListenerSinkFailing")]},
    # Segments failing on the old pod, all fetched by the new one.
    {"input_series": [
        old(FETCHED, ST, "0x30"), old("listener_hls_segments_failed_total", ST, "0+1x30"),
        new(FETCHED, ST, "0+120x30"), new("listener_hls_segments_failed_total", ST, "0x30")],
     "alert_rule_test": [alert("35m", "ListenerSegmentsFailing")]},
    # Counts split between the two pods add up: 4 + 4 gaps, 40 + 40 s dropped,
    # 2 + 2 decoder failures within the hour.
    {"input_series": [
        old("listener_hls_gaps_total", ST, "0x26 1 2 3 4"),
        new("listener_hls_gaps_total", ST, "0 1 2 3 4x26"),
        old("listener_audio_dropped_seconds_total", f'{ST},reason="backlog"', "0x26 10 20 30 40"),
        new("listener_audio_dropped_seconds_total", f'{ST},reason="backlog"', "0 10 20 30 40x26"),
        old("listener_audio_decoder_restarts_total", f'{ST},reason="failure"', "0x28 1 2"),
        new("listener_audio_decoder_restarts_total", f'{ST},reason="failure"', "0 1 2x27")],
     "alert_rule_test": [
         {**alert("59m", "ListenerStreamGaps"),
          "exp_alerts": [{"exp_labels": {"severity": "info", "station": "s"}}]},
         alert("50m", "ListenerAudioDropped", {"station": "s", "reason": "backlog"}),
         alert("59m", "ListenerDecoderRestarting", {"station": "s"})]},
]


def test_alert_rules_across_a_pod_restart(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["spec"]["groups"]
    # When alerts fire, not their wording.
    groups = [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"}
                              for r in g["rules"]]} for g in groups]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    tests = [{"interval": "1m", **t} for t in RESTART_TESTS]
    spec = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    result = subprocess.run([PROMTOOL, "test", "rules", "tests.yml"], capture_output=True,
                            text=True, timeout=60, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
