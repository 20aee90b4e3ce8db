"""Which sinks each model role reaches, and the per-clip agreement between models."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import CollectorRegistry

from listener.audio.history import AudioHistory
from listener.config import (
    ClipSinkConfig,
    JsonlSinkConfig,
    OrcaHelloSinkConfig,
    OutputsConfig,
    StationConfig,
    WebhookSinkConfig,
)
from listener.detection.rule import ClipResult
from listener.events.lanes import Agreement, sinks_for_role
from listener.events.sinks import build_sinks
from listener.metrics import Metrics


def test_each_role_reaches_only_its_sinks(tmp_path: Path) -> None:
    outputs = OutputsConfig(jsonl=JsonlSinkConfig(path=tmp_path / "e.jsonl"),
                            webhook=WebhookSinkConfig(url="http://127.0.0.1:9/hook"),
                            orcahello=OrcaHelloSinkConfig(dir=tmp_path / "o"),
                            clips=ClipSinkConfig(dir=tmp_path / "c"), log=True)
    sinks = build_sinks(outputs, StationConfig(id="s"), AudioHistory(max_s=60.0),
                        state_dir=tmp_path)
    names = {s.name for s in sinks}
    assert names == {"jsonl", "webhook", "orcahello", "clips", "log"}
    assert {s.name for s in sinks_for_role("primary", sinks)} == names
    assert {s.name for s in sinks_for_role("secondary", sinks)} == {"jsonl", "orcahello",
                                                                   "clips"}
    assert {s.name for s in sinks_for_role("shadow", sinks)} == {"jsonl"}


def _clip(start: float, detected: bool) -> ClipResult:
    return ClipResult(start, start + 60.0, None, (), (), detected, 80.0 if detected else 5.0, 59)


def test_agreement_waits_for_every_model_then_counts_each_pair(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    path = tmp_path / "events.agreement.jsonl"
    agreement = Agreement("s", ["a", "b", "c"], Metrics(registry, "s"), path)
    agreement.observe("a", _clip(0.0, True), "k")
    agreement.observe("b", _clip(0.0, False), "k")
    assert not path.exists()  # c has not decided yet
    agreement.observe("c", _clip(0.0, True), "k")
    agreement.observe("b", _clip(60.0, False), "k")  # another clip, still open
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["start_s"], r["fired"], r["agree"]) for r in records] == [
        (0.0, ["a", "c"], False)]

    def count(a: str, b: str, outcome: str) -> float | None:
        return registry.get_sample_value("listener_detect_agreement_total", {
            "station": "s", "model_a": a, "model_b": b, "outcome": outcome})

    assert count("a", "b", "only_a") == 1
    assert count("a", "c", "both") == 1
    assert count("b", "c", "only_b") == 1
    assert count("a", "b", "both") is None
