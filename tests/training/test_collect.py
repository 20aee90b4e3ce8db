"""``listener collect``: archive audio of a range, scored, low-scoring stretches saved as FLAC."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file
from support.bucket_server import BucketServer
from support.cli import run_cli
from support.daemon_support import ToneScorer, station_config, tone_recording, ts_segments

from listener.model.network import build_model
from listener.training.collect import collect, low_runs

NODE = "rpi_test"
A = 1_600_000_000  # 2020-09-13T12:26:40Z


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BucketServer]:
    d = tmp_path_factory.mktemp("collect")
    segs = ts_segments(tone_recording(d / "tone.wav", 40.0, [(15.0, 20.0)]), d / "hls")
    with BucketServer() as server:
        server.add_folder(NODE, A, [(f"live{i:03d}.ts", dur, data)
                                    for i, (data, dur) in enumerate(segs)])
        yield server


def test_low_runs_skip_every_window_above_the_bound() -> None:
    starts = np.arange(0.0, 8.0)
    scores = np.array([0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1])
    # window 3 (3..5 s) is loud: its whole extent goes, overlapping windows or not
    assert low_runs(starts, starts + 2, scores, 0.5, 1.0) == [(0.0, 3.0), (5.0, 9.0)]
    assert low_runs(starts, starts + 2, scores, 0.5, 3.5) == [(5.0, 9.0)]
    assert low_runs(starts, starts + 2, np.ones(8), 0.5, 1.0) == []


@pytest.mark.slow
def test_collect_saves_flac_of_the_range_up_to_max_mb(tmp_path: Path,
                                                      bucket: BucketServer) -> None:
    weights = tmp_path / "r18.safetensors"
    torch.manual_seed(0)  # random weights: this proves the path; the bound decides
    save_file({k: v.contiguous() for k, v in build_model("resnet18").state_dict().items()},
              str(weights))
    cfg = tmp_path / "station.yaml"
    cfg.write_text(f"""station: {{id: {NODE}}}
stream: {{kind: orcasound, base_url: {bucket.base_url}, node: {NODE},
         fetch: {{retries: 1, backoff_initial_s: 0.02, backoff_max_s: 0.05}}}}
model: {{weights: {weights}, architecture: resnet18, device: cpu, batch_size: 8}}
outputs: {{log: false}}
""")

    def collect(out: Path, *extra: str) -> str:
        res = run_cli("collect", "--config", cfg, "--from", "2020-09-13T12:26:41Z",
                      "--to", "2020-09-13T12:27:10Z", "--out", out, *extra)
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stdout

    text = collect(tmp_path / "all", "--max-score", "1.0")
    files = sorted((tmp_path / "all").glob("*.flac"))
    assert [f.name for f in files] == ["rpi_test_20200913T122640Z.flac"]
    info = sf.info(files[0])
    assert info.channels == 1 and 25.0 < info.duration <= 40.0, info
    assert "0 window(s) above 1.0 left out" in text
    text = collect(tmp_path / "none", "--max-score", "0.0")
    assert not list((tmp_path / "none").glob("*.flac")) and "wrote 0 FLAC" in text
    text = collect(tmp_path / "small", "--max-score", "1.0", "--max-mb", "0.01")
    assert "stopped at --max-mb" in text and not list((tmp_path / "small").glob("*.flac"))


def test_a_segment_lost_from_the_archive_ends_a_run_and_collect_goes_on(
        tmp_path: Path) -> None:
    segs = ts_segments(tone_recording(tmp_path / "t.wav", 50.0, []), tmp_path / "hls")
    with BucketServer() as server:
        server.add_folder(NODE, A, [(f"live{i:03d}.ts", dur, data)
                                    for i, (data, dur) in enumerate(segs)])
        lost = next(k for k in server.objects if k.endswith("live002.ts"))
        del server.objects[lost]  # 20..30 s is gone from the archive
        cfg = station_config(server.base_url, NODE, tmp_path)
        summary = collect(cfg, datetime.fromtimestamp(A, UTC),
                          datetime.fromtimestamp(A + 50, UTC), tmp_path / "out", max_mb=100,
                          max_score=1.0, scorer=ToneScorer())
    # Each side of the hole is saved, timed from its own first segment.
    assert [f.name for f in summary.files] == ["rpi_test_20200913T122640Z.flac",
                                               "rpi_test_20200913T122710Z.flac"]
    for f in summary.files:
        assert 18.0 <= sf.info(f).duration <= 20.5
