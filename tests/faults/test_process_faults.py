"""The fault matrix's process cases (issue 14): the daemon as its own process, killed,
stopped, restarted, its files corrupted, its webhook misbehaving, against the
loopback Orcasound node at 16x. Each scenario ends with
``support.fault_process.check_scenario``: true UTC within 25 ms, each clip
under one id, every second of the stream scored or reported lost, no traceback."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from support.fault_node import NODE, Segments, make_tone_segments
from support.fault_process import (
    LONG_S,
    LONG_TONES,
    Receiver,
    check_scenario,
    free_port,
    scenario,
    wait_for,
)

from listener.config import (
    ClipSinkConfig,
    JsonlSinkConfig,
    OutputsConfig,
    WebhookSinkConfig,
)

DECODED = "listener_audio_decoded_seconds_total"


@pytest.fixture(scope="module")
def long_segments(tmp_path_factory: pytest.TempPathFactory) -> Segments:
    return make_tone_segments(tmp_path_factory.mktemp("fault_long"), LONG_S, LONG_TONES)


@pytest.mark.slow
def test_sigkill_at_three_points(long_segments: Segments, tmp_path: Path) -> None:
    """Killed mid-clip (no state yet), right after a detection is written, and in the
    middle of its staged shutdown: the fourth run still delivers both clips, once each
    by id, with their true UTC, and the ledger accounts for every second."""
    with scenario(long_segments, tmp_path) as sc:
        run = sc.start()
        wait_for("30 s decoded", lambda: run.metric(DECODED) >= 30)
        run.send(signal.SIGKILL)
        assert run.proc.wait(10) == -signal.SIGKILL

        run = sc.start()
        wait_for("a detection written", lambda: bool(sc.detections()))
        run.send(signal.SIGKILL)
        assert run.proc.wait(10) == -signal.SIGKILL

        run = sc.start()
        wait_for("a resume point saved and scoring again",
                 lambda: _clip_end(tmp_path) >= 60.0 and run.metric(DECODED) >= 10)
        run.send(signal.SIGTERM)
        time.sleep(0.3)  # inside the drain: the pipeline, sinks and state are stopping
        run.send(signal.SIGKILL)
        run.proc.wait(10)

        resume_s = _clip_end(tmp_path)
        run = sc.start()  # resumes there: the first clip is not scored again
        sc.wait_until_done(run)
        assert run.stop() == 0
        check_scenario(sc)
    assert resume_s >= 60.0
    # (run 3 may have reached the second clip before its kill: then run 4 has none to emit)
    resumed = sc.runs[3].log
    assert "resuming" in resumed, resumed[-2000:]
    assert not [line for line in resumed.splitlines()
                if "detection utc=" in line and "offset=0.0s" in line]


def _webhook_outputs(workdir: Path, port: int, backoff_max_s: float) -> OutputsConfig:
    """JSON lines, the log, and a webhook on 127.0.0.1:``port`` with its outbox in
    ``workdir/outbox`` (a 1 s timeout, quick retries)."""
    return OutputsConfig(
        jsonl=JsonlSinkConfig(path=workdir / "events.jsonl"), log=True,
        webhook=WebhookSinkConfig(url=f"http://127.0.0.1:{port}/hook", timeout_s=1.0,
                                  backoff_initial_s=0.2, backoff_max_s=backoff_max_s,
                                  outbox_dir=workdir / "outbox"))


def _clip_end(workdir: Path) -> float:
    try:
        return float(json.loads((workdir / "state" / f"{NODE}.state.json").read_text())
                     ["clip_end_s"])
    except (OSError, ValueError):
        return 0.0


@pytest.mark.slow
def test_sigstop_for_60_s_then_catch_up_with_clips(long_segments: Segments,
                                                   tmp_path: Path) -> None:
    """Frozen for 60 s of wall time while the rest of the stream is published: the
    catch-up scores it all and each clip file holds its own clip's audio."""
    clips = tmp_path / "clips"
    outputs = OutputsConfig(jsonl=JsonlSinkConfig(path=tmp_path / "events.jsonl"), log=True,
                            clips=ClipSinkConfig(dir=clips, format="wav", before_s=0,
                                                 after_s=0))
    with scenario(long_segments, tmp_path, outputs=outputs) as sc:
        run = sc.start()
        wait_for("10 s decoded", lambda: run.metric(DECODED) >= 10)
        run.send(signal.SIGSTOP)
        time.sleep(60)
        run.send(signal.SIGCONT)
        sc.wait_until_done(run)
        assert run.stop() == 0
        check_scenario(sc)
    wavs = sorted(clips.glob("*.wav"))
    assert len(wavs) == 2
    for wav, (a, b) in zip(wavs, LONG_TONES, strict=True):
        audio, rate = sf.read(wav, dtype="float32")
        loud = np.flatnonzero(np.abs(audio) > 0.1) / rate
        # AAC's one frame of priming (21 ms) is the documented bound (docs/daemon.md)
        assert loud[0] == pytest.approx(a % 60, abs=0.025)
        assert loud[-1] == pytest.approx(b % 60, abs=0.05)


@pytest.mark.slow
def test_webhook_down_slow_429_400_then_back_across_a_restart(
        long_segments: Segments, tmp_path: Path) -> None:
    """Down (refused) for the first run, which stops with events in its outbox; the
    second run meets a slow answer (past the timeout), a 429 with Retry-After, a 400,
    then a healthy endpoint. Every event reaches it once acknowledged, or sits in
    ``dead/`` with an ERROR; the 429's Retry-After is honoured."""
    port = free_port()
    outbox = tmp_path / "outbox"
    outputs = _webhook_outputs(tmp_path, port, backoff_max_s=5.0)
    receiver = Receiver(port, ["slow", "429", "400"])
    with scenario(long_segments, tmp_path, outputs=outputs) as sc:
        run = sc.start()
        wait_for("a detection written", lambda: bool(sc.detections()))
        wait_for("a retry logged", lambda: "not delivered" in run.log)
        assert run.stop() == 0
        assert list(outbox.glob("*.json")), "the first run left nothing in its outbox"
        receiver.start()
        try:
            run = sc.start()
            sc.wait_until_done(run)
            wait_for("the outbox to empty", lambda: not list(outbox.glob("*.json")), 30)
            assert run.stop() == 0
        finally:
            receiver.stop()
        check_scenario(sc)
    ids = {e["id"] for e in sc.events()}
    dead = {p.name[13:-5] for p in (outbox / "dead").glob("*.json")}
    assert len(dead) == 1 and dead <= ids
    assert ids - dead <= receiver.delivered()
    assert all(key == body for _, key, body, _ in receiver.requests)
    (dead_id,) = dead
    assert any("rejected permanently" in line and dead_id in line
               for line in sc.runs[1].log.splitlines())
    arrivals = sorted(receiver.requests)
    i = [s for *_, s in arrivals].index(429)
    assert arrivals[i + 1][0] - arrivals[i][0] >= 2.0 - 0.05  # Retry-After: 2


@pytest.mark.slow
def test_corrupted_state_and_outbox_files(long_segments: Segments, tmp_path: Path) -> None:
    """A state file of garbage, an outbox entry of garbage, one that is a symbolic link to
    a host file and a torn temporary file: each named in the log, none POSTed, the
    stream scored from the start again under the same event ids."""
    port = free_port()
    outbox = tmp_path / "outbox"
    outputs = _webhook_outputs(tmp_path, port, backoff_max_s=1.0)
    receiver = Receiver(port, []).start()
    try:
        with scenario(long_segments, tmp_path, outputs=outputs) as sc:
            run = sc.start()
            wait_for("a detection written", lambda: bool(sc.detections()))
            assert run.stop() == 0
            state = tmp_path / "state" / f"{NODE}.state.json"
            assert json.loads(state.read_text())["clip_end_s"] == 60.0
            state.write_bytes(b'{"version": 1, "clip_end_s": 6\x00\xff garbage')
            (outbox / "000000000900-garbage.json").write_bytes(b"\x00\xffnot json")
            secret = tmp_path / "secret.txt"
            secret.write_text('{"id": "secret"}')
            (outbox / "000000000901-link.json").symlink_to(secret)
            (outbox / ".000000000902-torn.json.tmp").write_bytes(b'{"id": "to')
            run = sc.start()
            sc.wait_until_done(run)
            assert run.stop() == 0
            check_scenario(sc)
            log = sc.runs[1].log
    finally:
        receiver.stop()
    assert f"{state}: ignoring an unreadable state file" in log
    assert "000000000900-garbage.json" in log and "000000000901-link.json" in log
    assert (outbox / "dead" / "000000000900-garbage.json").exists()
    assert "secret" not in {body for _, _, body, _ in receiver.requests}
    assert "not json" not in {body for _, _, body, _ in receiver.requests}
    assert not (outbox / ".000000000902-torn.json.tmp").exists()
