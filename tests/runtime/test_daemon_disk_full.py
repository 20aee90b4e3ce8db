"""A full events/state disk loses no detection: refused records are kept, retried in
order once writing works again, and the resume point never passes them.

The events and state live on a small tmpfs that the test mounts (root only;
skipped with the reason elsewhere) and fills to the last byte.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemon_support import (
    ToneScorer,
    read_events,
    run_daemon_until,
    station_config,
    tone_recording,
    ts_segments,
)
from support.hls_server import LiveHlsServer

from listener.config import JsonlSinkConfig, OutputsConfig, StateConfig

NODE = "rpi_test"
FOLDER = 1_600_000_000


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 1):  # to the last byte
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


@pytest.mark.slow
def test_detections_refused_by_a_full_disk_are_written_once_it_has_room(
        tmp_path: Path, small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    wav = tone_recording(tmp_path / "tone.wav", 215.0, [(75.0, 85.0), (135.0, 145.0)])
    segments = ts_segments(wav, tmp_path / "hls")
    filler = _fill(small_disk)
    with LiveHlsServer() as server:
        server.start_folder(NODE, FOLDER)
        for data, dur in segments:
            server.publish(NODE, data, dur)
        cfg = station_config(
            server.base_url, NODE, tmp_path,
            outputs=OutputsConfig(jsonl=JsonlSinkConfig(path=small_disk / "events.jsonl"),
                                  log=True),
            state=StateConfig(dir=small_disk / "state"))
        with caplog.at_level(logging.ERROR):
            daemon = run_daemon_until(
                cfg, ToneScorer(), lambda d: d.pipeline.stats().windows_scored >= 200,
                timeout_s=90, during=lambda d: filler.unlink())
    refused = [r for r in caplog.records if "refused event" in r.getMessage()]
    assert refused and all(r.levelno == logging.ERROR for r in refused)
    events = read_events(small_disk / "events.jsonl")
    detections = [e["timestamp"] for e in events if e["kind"] == "detection"]
    assert detections == ["2020-09-13T12:27:40.000Z", "2020-09-13T12:28:40.000Z"]
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids))  # each record once
    # the resume point never passed a refused record: no state was written while full
    assert daemon.station is not None and daemon.station.resume_store.load() is None
