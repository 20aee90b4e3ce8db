"""``listener replay`` against a loopback S3 bucket serving real ffmpeg-made MPEG-TS/AAC.

The model is the tone-reacting fake of the daemon tests (``ToneScorer``),
except in the one subprocess test, which runs the real ResNet18 path.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from support.bucket_server import BucketServer
from support.cli import run_cli
from support.daemon_support import (
    ToneScorer,
    read_events,
    station_config,
    tone_recording,
    ts_segments,
)

from listener.audio.decode import FileDecoder
from listener.cli.main import main
from listener.config import default_config
from listener.detection.rule import ClipResult
from listener.model.network import build_model
from listener.pipeline.files import iter_scored_windows
from listener.replay.runner import Replay
from listener.replay.source import resume_index
from listener.replay.summary import ReplaySummary
from listener.sources.segments import Position

NODE = "rpi_test"
A = 1_600_000_000  # 2020-09-13T12:26:40Z
B = A + 3600  # a node restart an hour later
C = A + 7200  # a third stream: live004.ts answers 404, the playlist skips live009.ts
D = A + 10800  # a fourth stream, for server errors
TONES = [(15.0, 25.0), (75.0, 85.0), (135.0, 145.0)]  # one in each minute


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@pytest.fixture(scope="module")
def segments(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[bytes, float]]:
    """150 s of quiet noise with a 1 kHz tone in each minute, as 10 s TS segments."""
    d = tmp_path_factory.mktemp("replay_tone")
    return ts_segments(tone_recording(d / "tone.wav", 150.0, TONES), d / "hls")


@pytest.fixture(scope="module")
def bucket(segments: list[tuple[bytes, float]]) -> Iterator[BucketServer]:
    named = [(f"live{i:03d}.ts", dur, data) for i, (data, dur) in enumerate(segments)]
    with BucketServer() as server:
        server.add_folder(NODE, A, named)
        server.add_folder(NODE, B, named)
        server.add_folder(NODE, C, [s for s in named if s[0] != "live009.ts"],
                          missing=["live004.ts"])
        server.add_folder(NODE, D, named)
        yield server


class _Run:
    """One in-process replay with the tone scorer, recording the clips it emits."""

    def __init__(self, bucket: BucketServer, work: Path, start: float, end: float,
                 stop_after_clips: int | None = None) -> None:
        self.clips: list[tuple[str, ClipResult]] = []
        cfg = station_config(bucket.base_url, NODE, work)
        self.replay = Replay(cfg, at(start), at(end), out_dir=work / "out", scorer=ToneScorer(),
                             concurrency=3, on_clip=self._on_clip)
        self.stop_after = stop_after_clips

    def _on_clip(self, clip: ClipResult, stream_key: str) -> None:
        self.clips.append((stream_key, clip))
        if self.stop_after is not None and len(self.clips) >= self.stop_after:
            self.replay.request_stop("test: interrupt")

    def run(self) -> ReplaySummary:
        return asyncio.run(self.replay.run())


def _offline_scores(tmp_path: Path, segments: list[tuple[bytes, float]]) -> dict[float, float]:
    """`listener detect`'s scoring of the folder's audio decoded as one file."""
    joined = tmp_path / "folder.ts"
    joined.write_bytes(b"".join(data for data, _ in segments))
    scorer = ToneScorer()
    return {round(w.start_s, 6): w.score for w, _ in iter_scored_windows(
        joined, default_config(), scorer.score_waves, scorer.frontend, FileDecoder(joined), 16)}


def test_two_folders_score_like_detect_on_the_same_audio_at_folder_utc(
        tmp_path: Path, bucket: BucketServer, segments: list[tuple[bytes, float]]) -> None:
    # All of stream A, then the first 70 s of stream B (which restarted an hour later).
    run = _Run(bucket, tmp_path, A, B + 70)
    summary = run.run()
    assert summary.status == "complete" and summary.runs == 1

    # Equivalence: every window the replay scored has the score `listener detect`
    # gives the same window of the folder's audio decoded as one file (the
    # segments joined), i.e. the same decoder, window grid, frontend and model
    # input; and its UTC is the folder's time plus its stream offset.
    reference = _offline_scores(tmp_path, segments)
    by_stream: dict[str, list[ClipResult]] = {}
    for key, clip in run.clips:
        by_stream.setdefault(key, []).append(clip)
    assert list(by_stream) == [f"{NODE}/hls/{A}", f"{NODE}/hls/{B}"]
    for folder, clips in zip((A, B), by_stream.values(), strict=True):
        for clip in clips:
            assert clip.utc_start == at(folder + clip.start_s)
            for w in clip.windows:
                assert w.score == pytest.approx(reference[round(w.start_s, 6)], abs=1e-6)
                assert w.utc == at(folder) + timedelta(seconds=w.start_s)
    # Stream A: every window that lies inside a clip (none straddles a minute).
    a_windows = {round(w.start_s, 6) for c in by_stream[f"{NODE}/hls/{A}"] for w in c.windows}
    inside = {s for s in reference if int(s // 60) == int((s + 2 - 1e-6) // 60)}
    assert a_windows == inside
    # Stream B: the planned segments end at 70.02 s; its second clip is cut there.
    b_clips = by_stream[f"{NODE}/hls/{B}"]
    assert [(c.start_s, len(c.windows)) for c in b_clips] == [(0.0, 59), (60.0, 9)]

    # The decisions: a detection for each minute with a tone, at folder time + 60 k
    # (B's second minute is cut at 70 s, before its tone).
    events = read_events(tmp_path / "out" / "events.jsonl")
    detections = [e["timestamp"] for e in events if e["kind"] == "detection"]
    expected = [at(A + 60 * k) for k in range(3)] + [at(B)]
    assert detections == [t.strftime("%Y-%m-%dT%H:%M:%S.000Z") for t in expected]
    assert [d["utc_start"] for d in summary.detections] == detections
    # The hour between the streams is a gap in the archive, with its times.
    assert [g["kind"] for g in summary.archive_gaps] == ["between_folders"]
    assert summary.archive_gaps[0]["utc_end"] == "2020-09-13T13:26:40.000Z"
    assert not summary.lost_segments
    assert summary.audio_s == pytest.approx(sum(d for _, d in segments) + 70.0, abs=0.01)


def _unix(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_lost_segment_and_playlist_jump_are_reported_and_the_rest_scored(
        tmp_path: Path, bucket: BucketServer, segments: list[tuple[bytes, float]]) -> None:
    run = _Run(bucket, tmp_path, C + 30, C + 150)
    summary = run.run()
    assert summary.status == "complete"
    # live004.ts is listed but answers 404: a one-segment gap naming its URL and time.
    assert len(summary.lost_segments) == 1
    lost = summary.lost_segments[0]
    assert lost["url"] == f"{bucket.base_url}/{NODE}/hls/{C}/live004.ts"
    offsets = [sum(d for _, d in segments[:i]) for i in range(len(segments))]
    assert _unix(lost["utc_start"]) == pytest.approx(C + offsets[4], abs=0.002)
    doc = (tmp_path / "out" / "summary.json").read_text()
    assert "live004.ts" in doc
    # live009.ts is not in the playlist: an archive gap with its UTC span.
    jumps = [g for g in summary.archive_gaps if g["kind"] == "sequence_jump"]
    assert len(jumps) == 1 and "live009.ts" in jumps[0]["reason"]
    assert _unix(jumps[0]["utc_start"]) == pytest.approx(C + offsets[9], abs=0.002)
    # The rest is scored: windows on both sides of each hole, none inside one.
    starts = [w.start_s for _, c in run.clips for w in c.windows]
    assert not [s for s in starts if 40.1 < s + 2 and s < 50.0]
    assert not [s for s in starts if 90.1 < s + 2 and s < 100.0]
    assert min(starts) < 30 and max(starts) > 140  # (the warm-up segment 20-30 s is scored)
    assert len(run.clips) == 3 and all(c.detected for _, c in run.clips)
    assert summary.segments_fetched == summary.segments_planned - 1


def test_interrupted_replay_resumes_without_duplicates_or_missing_clips(
        tmp_path: Path, bucket: BucketServer) -> None:
    whole = _Run(bucket, tmp_path / "whole", A, B + 150)
    assert whole.run().status == "complete"
    expected = [(e["kind"], e["id"]) for e in read_events(tmp_path / "whole/out/events.jsonl")]
    assert len(expected) == 14  # 6 detections, 2 starts, 4 updates, 2 ends

    work = tmp_path / "resumed"
    first = _Run(bucket, work, A, B + 150, stop_after_clips=1)
    part = first.run()
    assert part.status == "interrupted" and 1 <= part.clips < 6
    requests_before = list(bucket.requests)
    second = _Run(bucket, work, A, B + 150)
    done = second.run()
    assert done.status == "complete" and done.runs == 2

    got = [(e["kind"], e["id"]) for e in read_events(work / "out" / "events.jsonl")]
    assert got == expected  # same events, in order: none twice, none missing
    clip_keys = [(k, c.start_s) for k, c in first.clips + second.clips]
    assert clip_keys == [(k, c.start_s) for k, c in whole.clips]
    assert done.clips == 6 and len(done.detections) == 6
    # The resumed run did not fetch the stream's first segment again.
    again = bucket.requests[len(requests_before):]
    assert f"/{bucket.bucket}/{NODE}/hls/{A}/live000.ts" not in again

    # A third run finds the replay complete and does nothing.
    third = _Run(bucket, work, A, B + 150)
    assert third.run().status == "complete" and third.replay.already_complete
    assert len(read_events(work / "out" / "events.jsonl")) == len(expected)


def test_server_errors_stop_the_replay_and_the_same_command_finishes_it(
        tmp_path: Path, bucket: BucketServer) -> None:
    # live008.ts answers 503 three times: the fetch gives up (retries: 2), so the
    # replay stops rather than skipping audio; the archive serves it again later.
    bucket.failures[f"{NODE}/hls/{D}/live008.ts"] = [503, 503, 503]
    first = _Run(bucket, tmp_path, D, D + 150).run()
    assert first.status == "failed" and "HTTP 503" in (first.error or "")
    assert "run the same command again" in (first.error or "")
    assert not first.lost_segments  # nothing was given up as lost
    done = _Run(bucket, tmp_path, D, D + 150).run()
    assert done.status == "complete" and done.runs == 2 and not done.lost_segments
    events = read_events(tmp_path / "out" / "events.jsonl")
    assert [e["timestamp"] for e in events if e["kind"] == "detection"] == [
        at(D + 60 * k).strftime("%Y-%m-%dT%H:%M:%S.000Z") for k in range(3)]
    assert len({e["id"] for e in events}) == len(events)


def test_resume_index_follows_the_plan_order(bucket: BucketServer) -> None:
    from listener.config import FetchConfig
    from listener.replay.plan import plan_range
    from listener.sources.http_client import HttpClient

    with HttpClient(FetchConfig()) as client:
        plan = plan_range(client, bucket.base_url, NODE, at(A + 95), at(B + 25))
    segs = plan.segments
    assert [(s.stream_key[-10:], s.sequence) for s in segs[:2]] == [(str(A), 8), (str(A), 9)]
    assert resume_index(segs, None) == 0
    assert resume_index(segs, Position(f"{NODE}/hls/{A}", 9)) == 2  # listed: just after it
    assert resume_index(segs, Position(f"{NODE}/hls/{A}", 3)) == 0  # before the plan
    assert resume_index(segs, Position(f"{NODE}/hls/{A}", 99)) == 8  # past A's segments
    assert resume_index(segs, Position(f"{NODE}/hls/{A + 60}", 0)) == 8  # a folder between
    assert resume_index(segs, Position(f"{NODE}/hls/{B}", 1)) == 10
    assert resume_index(segs, Position(f"{NODE}/hls/{C}", 0)) == len(segs)
    assert resume_index(segs, Position("elsewhere", 5)) == 0


# -- the command line ------------------------------------------------------------


def _config_file(tmp_path: Path, base_url: str, node: str = NODE, extra: str = "") -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(f"""\
station: {{id: {node}}}
stream:
  kind: orcasound
  base_url: {base_url}
  node: {node}
  fetch: {{retries: 1, backoff_initial_s: 0.02, backoff_max_s: 0.05}}
outputs: {{log: false}}
state: {{dir: {tmp_path / 'state'}}}
{extra}""")
    return path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """Call ``listener.cli.main.main`` in-process; returns (exit status, stdout, stderr)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def call(*argv: str) -> tuple[int, str, str]:
        status = main(list(argv))
        out, err = capsys.readouterr()
        return status, out, err

    yield call
    root.handlers[:] = handlers  # main() installs a handler on the captured stderr
    root.setLevel(level)


def test_bad_input_gives_a_clear_message_and_a_non_zero_exit(
        tmp_path: Path, bucket: BucketServer, cli: Any) -> None:
    cfg = str(_config_file(tmp_path, bucket.base_url))
    status, _, err = cli("replay", "--config", cfg, "--from", "2020-09-13T13:00:00Z",
                         "--to", "2020-09-13T12:00:00Z")
    assert status == 1 and "--to 2020-09-13T12:00:00Z is before --from" in err
    status, _, err = cli("replay", "--config", cfg, "--from", "2020-09-13T12:30:00",
                         "--to", "2020-09-13T13:00:00Z")
    assert status == 1 and "--from 2020-09-13T12:30:00 has no time zone" in err
    status, _, err = cli("replay", "--config", cfg, "--from", "yesterday",
                         "--to", "2020-09-13T13:00:00Z")
    assert status == 1 and "is not an ISO 8601 time" in err
    status, _, err = cli("replay", "--config", cfg, "--from", "2019-01-01T00:00:00Z",
                         "--to", "2019-01-01T01:00:00Z")
    assert status == 1 and "no audio in the archive for rpi_test" in err
    assert "first stream folder starts at 2020-09-13T12:26:40Z" in err
    other = tmp_path / "other"
    other.mkdir()
    status, _, err = cli("replay", "--config",
                         str(_config_file(other, bucket.base_url, node="rpi_nobody")),
                         "--from", "2020-09-13T12:30:00Z", "--to", "2020-09-13T13:00:00Z")
    assert status == 1 and "node 'rpi_nobody' has no stream folders" in err
    hls = tmp_path / "hls.yaml"
    hls.write_text("station: {id: x}\nstream: {kind: hls, url: 'http://127.0.0.1:9/a.m3u8'}\n")
    status, _, err = cli("replay", "--config", str(hls), "--from", "2020-09-13T12:30:00Z",
                         "--to", "2020-09-13T13:00:00Z")
    assert status == 1 and "needs 'stream: {kind: orcasound" in err

    # the same message from the installed command line, as a user sees it
    proc = subprocess.run([sys.executable, "-m", "listener", "replay", "--config", cfg,
                           "--from", "2020-09-13T12:30:00-07:00", "--to", "2020-09-13T12:00"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "error: --to 2020-09-13T12:00 has no time zone" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_replays_with_the_real_resnet18(tmp_path: Path, bucket: BucketServer) -> None:
    weights = tmp_path / "r18.safetensors"
    torch.manual_seed(0)  # random weights: this proves the path, not the accuracy
    save_file({k: v.contiguous() for k, v in build_model("resnet18").state_dict().items()},
              str(weights))
    cfg = _config_file(tmp_path, bucket.base_url, extra=(
        f"model: {{weights: {weights}, architecture: resnet18, device: cpu, batch_size: 8}}\n"))
    out = tmp_path / "out"
    # 14 s of stream A (61-75 s): segments 6 and 7, plus segment 5 to warm the decoder up.
    proc = run_cli("replay", "--config", cfg, "--from", "2020-09-13T12:27:41Z",
                   "--to", "2020-09-13T05:27:55-07:00", "--out", out, "--concurrency", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "complete" in proc.stdout and "x real time" in proc.stdout
    summary = ReplaySummary.load(out / "summary.json")
    assert summary is not None and summary.status == "complete"
    assert summary.segments_planned == summary.segments_fetched == 3
    assert summary.windows_scored == 28  # starting at 51..78 s: the warm-up segment's too
    assert summary.covered_s == pytest.approx(14.0, abs=1e-3)
    # The minute 0-60 s got windows only from the warm-up audio: outside the range.
    assert summary.clips == 1 and summary.clips_outside_range == 1
    assert (out / "state" / f"{NODE}.state.json").exists()
