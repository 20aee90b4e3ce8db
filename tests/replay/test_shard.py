"""Sharded replay: (stations x chunks) split into disjoint parts; merge checks and joins.

The end-to-end test replays one stream in three chunks whose boundaries cut
clips in two, and gets exactly the detections of the unsharded replay.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.bucket_server import BucketServer
from support.daemon_support import ToneScorer, station_config, tone_recording, ts_segments

from listener.errors import ListenerError
from listener.replay.runner import Replay
from listener.replay.shard import ReplayPart, merge, run_parts, shard_parts, split
from listener.runtime.roster import Shard

NODE = "rpi_shard"
A = 1_600_000_000
T0 = datetime(2020, 9, 1, tzinfo=UTC)
CLIP = timedelta(seconds=60)


def _spans(parts: list[ReplayPart]) -> list[tuple[str, datetime, datetime]]:
    return [(p.station, p.owned_start, p.owned_end) for p in parts]


@pytest.mark.parametrize("seed", range(5))
def test_shards_are_disjoint_and_cover_every_station_and_second(seed: int) -> None:
    rng = random.Random(seed)
    stations = [(f"s{i}", f"s{i}.yaml") for i in range(rng.randint(1, 5))]
    end = T0 + timedelta(seconds=rng.randint(1, 10 * 86400))
    chunk = timedelta(seconds=rng.choice([600, 3600, 86400, 7 * 86400]))
    parts = split(stations, T0, end, chunk, CLIP)
    count = rng.randint(1, 9)
    shards = [shard_parts(parts, Shard(i, count)) for i in range(count)]
    joined = sorted(p.index for s in shards for p in s)
    assert joined == list(range(len(parts)))  # each part in exactly one shard
    for sid, _ in stations:
        own = sorted((a, b) for s, a, b in _spans(parts) if s == sid)
        assert own[0][0] == T0 and own[-1][1] == end
        assert all(x[1] == y[0] for x, y in itertools.pairwise(own))
    for p in parts:  # replays run one clip past the chunk, never past the range
        assert p.run_end == min(p.owned_end + CLIP, end) if p.owned_end < end else p.run_end == end


def _fake_part(out: Path, part: ReplayPart, status: str = "complete") -> None:
    from listener.replay.shard import write_part
    from listener.replay.summary import ReplaySummary

    folder = part.folder(out)
    write_part(part, folder)
    summary = ReplaySummary(part.station, part.run_start, part.run_end, status=status)
    summary.save(folder / "summary.json")


def test_merge_refuses_missing_doubled_or_unfinished_parts(tmp_path: Path) -> None:
    parts = split([("s0", "a.yaml")], T0, T0 + timedelta(hours=3), timedelta(hours=1), CLIP)
    for p in parts[:2]:
        _fake_part(tmp_path, p)
    with pytest.raises(ListenerError, match="is missing"):
        merge(tmp_path)
    _fake_part(tmp_path, parts[2], status="interrupted")
    with pytest.raises(ListenerError, match="not complete"):
        merge(tmp_path)
    _fake_part(tmp_path, parts[2])
    assert merge(tmp_path).parts == 3
    other = split([("s0", "a.yaml")], T0, T0 + timedelta(hours=3), timedelta(hours=2), CLIP)
    _fake_part(tmp_path, other[0])  # a second run with another chunk length
    with pytest.raises(ListenerError, match="replayed twice"):
        merge(tmp_path)


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BucketServer]:
    d = tmp_path_factory.mktemp("shard_tone")
    segs = ts_segments(tone_recording(d / "t.wav", 150.0, [(50.0, 58.0), (100.0, 110.0)]),
                       d / "hls")
    with BucketServer() as server:
        server.add_folder(NODE, A, [(f"live{i:03d}.ts", dur, data)
                                    for i, (data, dur) in enumerate(segs)])
        yield server


def test_sharded_replay_equals_the_unsharded_one(tmp_path: Path, bucket: BucketServer) -> None:
    start, end = datetime.fromtimestamp(A, UTC), datetime.fromtimestamp(A + 150, UTC)
    cfg = station_config(bucket.base_url, NODE, tmp_path / "whole")
    whole = asyncio.run(Replay(cfg, start, end, out_dir=tmp_path / "whole" / "out",
                               scorer=ToneScorer()).run())
    assert whole.status == "complete" and len(whole.detections) == 2
    config = tmp_path / "station.json"
    config.write_text(json.dumps(station_config(bucket.base_url, NODE, tmp_path / "parts")
                                 .model_dump(mode="json")))
    # 50 s chunks: each boundary falls inside a detected clip
    parts = split([(NODE, str(config))], start, end, timedelta(seconds=50), CLIP)
    out = tmp_path / "shards"
    for i in range(2):  # two "pods", each its own shard
        assert run_parts(shard_parts(parts, Shard(i, 2)), out, concurrency=2,
                         say=lambda _: None, scorer=ToneScorer()) == 0
    merged = merge(out)
    assert merged.parts == 3
    assert [{k: v for k, v in d.items() if k != "station"} for d in merged.detections] == \
        whole.detections
    # Each part replays a clip past its chunk; the merged audio counts each second once.
    assert merged.audio_s == pytest.approx(whole.audio_s, abs=0.01)


def _station_json(tmp_path: Path, bucket: BucketServer) -> Path:
    config = tmp_path / "station.json"
    config.write_text(json.dumps(station_config(bucket.base_url, NODE, tmp_path / "parts")
                                 .model_dump(mode="json")))
    return config


def test_a_chunk_without_archived_audio_is_a_complete_part_of_gaps(
        tmp_path: Path, bucket: BucketServer) -> None:
    # The archive's audio ends at A + 150 s: the last two 60 s chunks hold none.
    start, end = datetime.fromtimestamp(A, UTC), datetime.fromtimestamp(A + 270, UTC)
    cfg = station_config(bucket.base_url, NODE, tmp_path / "whole")
    whole = asyncio.run(Replay(cfg, start, end, out_dir=tmp_path / "whole" / "out",
                               scorer=ToneScorer()).run())
    assert whole.status == "complete" and whole.gap_s == pytest.approx(120.0, abs=0.1)
    parts = split([(NODE, str(_station_json(tmp_path, bucket)))], start, end,
                  timedelta(seconds=60), CLIP)
    out = tmp_path / "shards"
    assert run_parts(parts, out, concurrency=2, say=lambda _: None, scorer=ToneScorer()) == 0
    merged = merge(out)
    assert merged.parts == 5
    assert [{k: v for k, v in d.items() if k != "station"} for d in merged.detections] == \
        whole.detections
    # Each part replays a clip past its chunk; the merged audio counts each second once.
    assert merged.audio_s == pytest.approx(whole.audio_s, abs=0.01)
    last = json.loads((parts[-1].folder(out) / "summary.json").read_text())
    assert last["status"] == "complete" and last["audio_s"] == 0
    assert [g["kind"] for g in last["archive_gaps"]] == ["after_last_segment"]


def test_a_failing_part_is_reported_and_the_next_parts_still_run(
        tmp_path: Path, bucket: BucketServer) -> None:
    start, end = datetime.fromtimestamp(A, UTC), datetime.fromtimestamp(A + 150, UTC)
    missing = tmp_path / "no_such_station.json"
    parts = split([("aa_broken", str(missing)), (NODE, str(_station_json(tmp_path, bucket)))],
                  start, end, timedelta(seconds=150), CLIP)
    lines: list[str] = []
    out = tmp_path / "shards"
    assert run_parts(parts, out, concurrency=2, say=lines.append, scorer=ToneScorer()) == 1
    assert "failed" in lines[0] and str(missing) in lines[0]
    assert "complete, 2 detection(s)" in lines[1]
    with pytest.raises(ListenerError, match="not complete"):
        merge(out)
