"""Faults must never move time: a bad segment in the middle of a live stream.

The stream is 155 s of quiet noise with a 1 kHz tone at 75-85 s (the tone
model fake scores it 1.0). Segment 3 (30-40 s) is served broken; every window
after it must still carry its true UTC, the loss must be reported (metric
seconds and a WARNING naming the segment's URL), and a clip sink must write
the audio of its own clip.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from support.daemon_support import (
    ToneScorer,
    read_events,
    run_daemon_until,
    station_config,
    tone_recording,
    ts_segments,
)
from support.hls_server import LiveHlsServer

from listener.config import ClipSinkConfig, JsonlSinkConfig, OutputsConfig

NODE = "rpi_test"
FOLDER = 1_600_000_000
BROKEN = 3


@pytest.fixture(scope="module")
def tone_segments(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[bytes, float]]:
    d = tmp_path_factory.mktemp("tone")
    wav = tone_recording(d / "tone.wav", 155.0, [(75.0, 85.0)])
    return ts_segments(wav, d / "hls")


def _broken(kind: str, data: bytes) -> bytes:
    if kind == "html":
        return b"<html><body><h1>503 Service Unavailable</h1></body></html>\n"
    if kind == "random":
        return np.random.default_rng(3).integers(0, 256, len(data), dtype=np.uint8).tobytes()
    return data[:len(data) // 2]  # "half": the body cut short


def _tone_windows(events: list[dict]) -> list[float]:
    """Unix times of the windows scored positive (the tone) in the detection events."""
    out = []
    for e in events:
        if e["kind"] == "detection":
            for w in e["clip"]["windows"]:
                if w["score"] >= 0.5:
                    out.append(datetime.fromisoformat(w["utc"].replace("Z", "+00:00"))
                               .timestamp() - FOLDER)
    return sorted(out)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["html", "random", "half"])
def test_a_broken_segment_never_shifts_later_windows(
        tmp_path: Path, tone_segments: list[tuple[bytes, float]], kind: str,
        caplog: pytest.LogCaptureFixture) -> None:
    with LiveHlsServer() as server:
        server.start_folder(NODE, FOLDER)
        for i, (data, dur) in enumerate(tone_segments):
            server.publish(NODE, _broken(kind, data) if i == BROKEN else data, dur)
        clips_dir = tmp_path / "clips"
        cfg = station_config(server.base_url, NODE, tmp_path, outputs=OutputsConfig(
            jsonl=JsonlSinkConfig(path=tmp_path / "events.jsonl"), log=True,
            clips=ClipSinkConfig(dir=clips_dir, format="wav", before_s=0, after_s=0)))
        with caplog.at_level(logging.WARNING):
            daemon = run_daemon_until(
                cfg, ToneScorer(), lambda d: d.pipeline.stats().windows_scored >= 140,
                timeout_s=90)
    tone = _tone_windows(read_events(tmp_path / "events.jsonl"))
    # windows of 2 s overlapping the tone at 75-85 s start at 74..84 s (85 s: AAC's
    # post-echo of the tone's end is still louder than the quiet noise)
    assert tone, "the tone was not detected"
    assert tone[0] == pytest.approx(74.0, abs=0.025)
    assert 84.0 - 0.025 <= tone[-1] <= 85.0 + 0.025
    url = f"/{NODE}/hls/{FOLDER}/live{BROKEN:03d}.ts"
    assert any(url in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    reason = "short_segment" if kind == "half" else "undecodable"
    lost = daemon.registry.get_sample_value("listener_audio_dropped_seconds_total",
                                            {"station": NODE, "reason": reason})
    assert lost is not None and lost > (4.5 if kind == "half" else 9.9)
    # the clip file holds the clip's own audio: the tone at 75-85 s of the 60-120 s clip
    wavs = sorted(clips_dir.glob("*.wav"))
    assert len(wavs) == 1
    audio, rate = sf.read(wavs[0], dtype="float32")
    loud = np.flatnonzero(np.abs(audio) > 0.1) / rate
    assert loud[0] == pytest.approx(15.0, abs=0.05) and loud[-1] == pytest.approx(25.0, abs=0.05)
