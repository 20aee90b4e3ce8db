"""Batched window preparation: bit for bit the per-window path, in the live station too."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from support.daemon_support import ToneBackend, ToneScorer, run_daemon_until, station_config
from support.hls_media import REAL_FOLDER_TS, load_real_segments
from support.hls_server import LiveHlsServer

from listener.audio.windows import Window, WindowCutter
from listener.config import ModelEntry
from listener.model.frontend import Frontend
from listener.pipeline.prepare import prepare_windows

DATA = Path(__file__).parents[1] / "data"
NODE = "rpi_orcasound_lab"


class CheckingFrontend(Frontend):
    """The real frontend, whose batch step also prepares each window alone and compares."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.windows = 0
        self.mismatches: list[str] = []

    def prepare_batch(self, windows: Sequence[np.ndarray] | np.ndarray,
                      sample_rate: int) -> np.ndarray:
        batch = super().prepare_batch(windows, sample_rate)
        alone = np.stack([self.prepare(w, sample_rate) for w in windows])
        if batch.dtype != np.float32 or not np.array_equal(batch, alone):
            self.mismatches.append(f"{len(windows)} windows at {sample_rate} Hz")
        self.calls += 1
        self.windows += len(windows)
        return batch


def _cut(path: Path, seconds: float, hop_s: float) -> list[Window]:
    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    cutter = WindowCutter(2.0, hop_s)
    cutter.reset(0.0, rate, None)
    return cutter.push(audio[:round(seconds * rate)].T)


def test_prepare_windows_groups_by_rate_and_length_and_keeps_order() -> None:
    """Real audio at three rates, interleaved as a codec change would, plus a short tail."""
    a = _cut(DATA / "recordings" / "onc_naxys_hydrophone_44000hz.wav", 3.0, 1.0)
    b = _cut(DATA / "catalog" / "S01-JL_22050hz.wav", 2.5, 0.5)
    c = _cut(DATA / "catalog" / "S10-JKL-4_25057hz.wav", 2.2, 1.0)
    tail = Window(5.0, 6.3, a[1].samples[:round(1.3 * 44000)].copy(), 44000)
    windows = [a[0], b[0], c[0], a[1], tail, b[1]]
    fe = CheckingFrontend()
    got = prepare_windows(fe.prepare_batch, windows)
    assert not fe.mismatches
    assert fe.calls == 4  # (44 kHz, 2 s), (22.05 kHz, 2 s), (25.057 kHz, 2 s), (44 kHz, 1.3 s)
    for w, wave in zip(windows, got, strict=True):
        assert wave.dtype == np.float32
        assert np.array_equal(wave, fe.prepare(w.samples, w.sample_rate))
    assert [g.size for g in got] == [40000, 40000, 40000, 40000, 26000, 40000]
    assert not np.array_equal(got[0], got[3])  # order kept: a[0] and a[1] differ
    assert prepare_windows(fe.prepare_batch, []) == []


class CheckingToneScorer(ToneScorer):
    def __init__(self) -> None:
        super().__init__()
        self.frontend = CheckingFrontend()


class CheckingToneBackend(ToneBackend):
    def __init__(self) -> None:
        super().__init__()
        self.tone.frontend = CheckingFrontend()


def test_live_station_and_its_lane_prepare_in_batches_bit_for_bit(tmp_path: Path) -> None:
    """Real Orcasound AAC through the live station: both models' batched preparation of
    every window equals preparing it alone."""
    scorer, lane = CheckingToneScorer(), CheckingToneBackend()
    segments = load_real_segments()
    with LiveHlsServer() as server:
        server.start_folder(NODE, REAL_FOLDER_TS)
        for seg in segments:
            server.publish(NODE, seg.data, seg.duration_s)
        cfg = station_config(server.base_url, NODE, tmp_path, models=(
            ModelEntry(id="primary", batch_size=8, max_batch_wait_s=0.05),
            ModelEntry(id="lane", role="shadow", batch_size=8, max_batch_wait_s=0.05,
                       window_s=3.0, hop_s=2.0)))

        def done(daemon: Any) -> bool:
            return bool(daemon.pipeline.windows_scored >= 27 and lane.windows >= 13)

        run_daemon_until(cfg, scorer, done, timeout_s=60,
                         backends={"lane": lane})
    primary, shadow = scorer.frontend, lane.tone.frontend
    assert isinstance(primary, CheckingFrontend) and isinstance(shadow, CheckingFrontend)
    assert primary.windows >= 27 and shadow.windows >= 13
    assert not primary.mismatches and not shadow.mismatches
