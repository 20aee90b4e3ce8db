"""A station whose model fails is stopped and rebuilt, not left feeding audio
nobody scores (docs/daemon.md: a pipeline that fails is closed and rebuilt)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from support.daemon_support import (
    ToneScorer,
    publish_in_background,
    run_daemon_until,
    station_config,
    tone_recording,
    ts_segments,
)
from support.hls_server import LiveHlsServer

from listener.runtime.builder import StationOptions

NODE = "rpi_fail"


class FailingScorer(ToneScorer):
    """A model whose every batch fails, as a CUDA or ONNX runtime error would."""

    def score_waves(self, waves: np.ndarray) -> np.ndarray:
        self.calls += 1
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_a_failing_model_gets_the_station_rebuilt(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    segs = ts_segments(tone_recording(tmp_path / "t.wav", 120.0, []), tmp_path / "hls")
    with LiveHlsServer() as server:
        server.start_folder(NODE, 1_600_000_000)
        rest = iter(segs)

        def publish() -> bool:
            nxt = next(rest, None)
            if nxt is not None:
                server.publish(NODE, *nxt)
            return nxt is not None

        publish()
        publish()
        publish_in_background(publish, 0.5)
        cfg = station_config(server.base_url, NODE, tmp_path)
        # The stop may land while the rebuilt station runs this model again; its
        # drain then fails and the run exits 1 (by design), so any status will do.
        daemon = run_daemon_until(cfg, FailingScorer(), lambda d: d.units[0].restarts >= 1,
                                  timeout_s=30, expect_status=None,
                                  options=StationOptions(restart_on_failure=True))
    assert daemon.units[0].restarts >= 1
    failed = [r for r in caplog.records
              if r.levelno == logging.ERROR and "pipeline failed" in r.getMessage()]
    assert failed and "CUDA error" in failed[0].getMessage()
