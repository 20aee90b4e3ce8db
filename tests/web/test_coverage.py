"""listener.web.coverage: spans merge, survive a restart, compact, and feed a metric."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import CollectorRegistry

from listener.metrics import Metrics
from listener.web.coverage import CoverageLedger

NOW = 1_800_000_000.0


def ledger(path: Path, now: float = NOW, **kw: float) -> CoverageLedger:
    return CoverageLedger(path, clock=lambda: now, **kw)


def test_touching_stretches_merge_and_kinds_split(tmp_path: Path) -> None:
    led = ledger(tmp_path / "c.jsonl")
    for i in range(100):  # 100 one-second windows, float hops
        led.record(NOW - 3600 + i * 1.0000001, NOW - 3600 + i + 1.0, "scored")
    led.record(NOW - 3500, NOW - 3400, "lost", "gap")
    led.record(NOW - 3400, NOW - 3000, "scored")
    spans = led.spans(NOW - 7200, NOW)
    assert [(s.kind, s.reason, round(s.seconds)) for s in spans] == [
        ("scored", "", 100), ("lost", "gap", 100), ("scored", "", 400)]
    summary = led.summary(NOW - 3600, NOW)
    assert summary["scored_s"] == 500 and summary["lost_s"] == {"gap": 100}
    assert summary["unknown_s"] == 3000
    assert abs(led.scored_ratio() - 500 / 3600) < 1e-6


def test_a_restart_reads_back_what_was_recorded(tmp_path: Path) -> None:
    path = tmp_path / "state" / "coverage-lab.jsonl"
    led = ledger(path, checkpoint_s=60)
    for i in range(300):
        led.record(NOW - 1000 + i, NOW - 999 + i, "scored")
    # Not flushed: a crash loses at most checkpoint_s of the open span.
    crashed = tmp_path / "crashed.jsonl"
    crashed.write_bytes(path.read_bytes())
    again = ledger(crashed)
    [span] = again.spans(NOW - 2000, NOW)
    assert span.start == NOW - 1000 and 300 - 60 <= span.seconds <= 300
    led.flush()
    [span] = ledger(path).spans(NOW - 2000, NOW)
    assert span.seconds == 300
    # Checkpoints of one span are many lines; the file stays small anyway.
    assert len(path.read_text().splitlines()) <= 7


def test_bad_lines_are_skipped_and_old_spans_compacted_away(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    lines = [json.dumps({"start": NOW - 90 * 86400, "end": NOW - 89 * 86400, "kind": "scored"}),
             "{torn", json.dumps({"start": 5, "end": 1, "kind": "scored"}),
             json.dumps({"start": NOW - 60, "end": NOW - 30, "kind": "lost", "reason": "backlog"})]
    path.write_text("\n".join(lines) + "\n")
    led = ledger(path)
    assert [(s.kind, s.reason) for s in led.spans(0, NOW)] == [("lost", "backlog")]
    assert len(path.read_text().splitlines()) == 1  # compacted, atomically rewritten


def test_metric_is_the_scored_fraction_of_the_last_hour(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    led = ledger(tmp_path / "c.jsonl")
    led.bind_metric(Metrics(registry, "lab").coverage_scored_ratio)
    led.record(NOW - 1800, NOW, "scored")
    value = registry.get_sample_value("listener_coverage_scored_ratio", {"station": "lab"})
    assert value is not None and abs(value - 0.5) < 1e-9


def test_observer_records_scored_windows_lost_gaps_and_unexplained_holes(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from listener.web.views import ConsoleObserver, LiveFeed

    led = ledger(tmp_path / "c.jsonl")
    live = LiveFeed(None)
    obs = ConsoleObserver(live, led, hop_s=1.0)
    t0 = datetime.fromtimestamp(NOW - 600, UTC)
    for i in range(10):
        obs.window_scored(i, i + 2.0, t0 + timedelta(seconds=i), 0.1)
    obs.audio_lost("gap", t0 + timedelta(seconds=10), 20.0)
    for i in range(30, 40):
        obs.window_scored(i, i + 2.0, t0 + timedelta(seconds=i), 0.1)
    for i in range(100, 110):  # 60 s shed under backlog: nobody said why
        obs.window_scored(i, i + 2.0, t0 + timedelta(seconds=i), 0.9)
    kinds = [(s.kind, s.reason, round(s.seconds)) for s in led.spans(0, NOW)]
    assert kinds == [("scored", "", 10), ("lost", "gap", 20), ("scored", "", 10),
                     ("lost", "unscored", 60), ("scored", "", 10)]
    points, seq = live.scores_after(0)
    assert seq == 30 and points[-1].score == 0.9
