"""A live stream that stalls in the middle of a clip: the call heard before the
stall is alerted within about ``stream.stale_after_s``, not when the node comes
back (docs/daemon.md, "encounters")."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from support.daemon_support import (
    ToneScorer,
    read_events,
    run_daemon_until,
    station_config,
    tone_recording,
    ts_segments,
)
from support.hls_server import LiveHlsServer

from listener.runtime.daemon import Daemon

NODE = "rpi_stall"
FOLDER = 1_600_000_000


def _detections(path: Path) -> list[dict[str, Any]]:
    try:
        return [e for e in read_events(path) if e["kind"] == "detection"]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def test_a_stream_stalled_mid_clip_alerts_the_call_and_decides_the_rest_apart(
        tmp_path: Path) -> None:
    # Calls (tones) at 5-25 s and 45-55 s; the node goes quiet at 40 s, in the
    # middle of the first minute, and comes back after the first alert.
    rec = tone_recording(tmp_path / "t.wav", 90.0, [(5.0, 25.0), (45.0, 55.0)])
    segs = ts_segments(rec, tmp_path / "hls")
    events = tmp_path / "events.jsonl"
    seen: dict[str, float] = {}
    with LiveHlsServer() as server:
        server.start_folder(NODE, FOLDER)
        for data, dur in segs[:4]:  # 0..40 s, then nothing
            server.publish(NODE, data, dur)
        cfg = station_config(server.base_url, NODE, tmp_path)
        assert cfg.stream is not None
        cfg = cfg.model_copy(update={"stream": cfg.stream.model_copy(
            update={"stalled_clip_after_s": 10.0})})  # the least allowed; care every 2.5 s
        published_rest = threading.Event()

        def done(daemon: Daemon) -> bool:
            found = _detections(events)
            if found and "first" not in seen:
                seen["first"] = time.monotonic()
                for data, dur in segs[4:]:  # the node is back: 40..90 s
                    server.publish(NODE, data, dur)
                published_rest.set()
            return len(found) >= 2

        started = time.monotonic()
        run_daemon_until(cfg, ToneScorer(), done, timeout_s=60)
    found = _detections(events)
    assert published_rest.is_set(), "the call before the stall was never alerted"
    # Alerted within the stall limit (10 s) plus the check interval (2.5 s) and start-up.
    assert seen["first"] - started < 30
    first, rest = found[0]["clip"], found[1]["clip"]
    assert first["start_s"] == 0.0 and 30.0 <= first["end_s"] <= 40.0
    # The rest of that minute is its own clip, from where the first part ended.
    assert rest["start_s"] == first["end_s"] and rest["end_s"] == 60.0
    assert found[0]["id"] != found[1]["id"]
    assert found[0]["timestamp"] != found[1]["timestamp"]
