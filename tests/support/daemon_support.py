"""Helpers for the daemon tests: a tone recording, a tone-reacting model fake,
and running a Daemon in-process against the loopback HLS server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from prometheus_client import CollectorRegistry

from listener.audio.decode import find_ffmpeg
from listener.config import (
    Config,
    FetchConfig,
    FrontendConfig,
    JsonlSinkConfig,
    MetricsConfig,
    ModelConfig,
    OutputsConfig,
    StateConfig,
    StationConfig,
    StreamConfig,
)
from listener.model.frontend import Frontend
from listener.runtime.builder import StationOptions
from listener.runtime.daemon import Daemon, Timeouts

RATE = 48000
TONE_HZ = 1000.0


def tone_recording(path: Path, seconds: float, tones: list[tuple[float, float]],
                   seed: int = 0) -> Path:
    """Quiet noise with loud 1 kHz tones at the given (start, end) seconds."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(int(seconds * RATE)) * 0.001).astype(np.float32)
    t = np.arange(x.size) / RATE
    for a, b in tones:
        on = (t >= a) & (t < b)
        x[on] += 0.3 * np.sin(2 * np.pi * TONE_HZ * t[on]).astype(np.float32)
    sf.write(path, x, RATE, subtype="FLOAT")
    return path


def ts_segments(recording: Path, out_dir: Path) -> list[tuple[bytes, float]]:
    """Cut a recording into Orcasound-like 10 s MPEG-TS/AAC segments with ffmpeg."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
           "-i", str(recording), "-ar", "48000", "-ac", "2", "-c:a", "aac", "-b:a", "128k",
           "-f", "segment", "-segment_time", "10", "-segment_format", "mpegts",
           "-segment_list", str(out_dir / "list.m3u8"), str(out_dir / "live%03d.ts")]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    out, dur = [], None
    for line in (out_dir / "list.m3u8").read_text().splitlines():
        if line.startswith("#EXTINF:"):
            dur = float(line[8:].split(",")[0])
        elif line and not line.startswith("#") and dur is not None:
            out.append(((out_dir / line).read_bytes(), dur))
    return out


class ToneScorer:
    """A model fake that scores 1.0 when a 1 kHz tone dominates the window, else 0.0.

    It uses the real frontend's ``prepare_batch`` (downmix + per-window
    resampling, batched), so the audio path into the model is the production one.
    """

    def __init__(self) -> None:
        self.frontend = Frontend(FrontendConfig())
        self.info: dict[str, Any] = {"architecture": "tone-fake", "device": "cpu",
                                     "precision": "float32",
                                     "sha256": "", "random": False}
        self.calls = 0

    def score_waves(self, waves: np.ndarray) -> np.ndarray:
        self.calls += 1
        spec = np.abs(np.fft.rfft(waves, axis=1)) ** 2
        freqs = np.fft.rfftfreq(waves.shape[1], 1 / 20000)
        band = (freqs > TONE_HZ - 50) & (freqs < TONE_HZ + 50)
        ratio = spec[:, band].sum(axis=1) / np.maximum(spec.sum(axis=1), 1e-20)
        return np.clip(ratio * 2.0, 0.0, 1.0)


def station_config(base_url: str, node: str, workdir: Path, **over: Any) -> Config:
    fields: dict[str, Any] = {
        "station": StationConfig(id=node, name="Test node", longitude=-123.17, latitude=48.55),
        "stream": StreamConfig(kind="orcasound", base_url=base_url, node=node,
                               poll_interval_s=0.1, start_segments_back=1000,
                               stale_after_s=30.0,
                               fetch=FetchConfig(connect_timeout_s=2, read_timeout_s=2, retries=2,
                                                 backoff_initial_s=0.02, backoff_max_s=0.1)),
        "model": ModelConfig(batch_size=8, max_batch_wait_s=0.05),
        "outputs": OutputsConfig(jsonl=JsonlSinkConfig(path=workdir / "events.jsonl"), log=True),
        "metrics": MetricsConfig(host="127.0.0.1", port=0),
        "state": StateConfig(dir=workdir / "state"),
    }
    if "models" in over:
        del fields["model"]
    fields.update(over)
    return Config(**fields)


def run_daemon_until(cfg: Config, scorer: Any, done: Callable[[Daemon], bool],
                     timeout_s: float = 60.0,
                     during: Callable[[Daemon], None] | None = None,
                     options: StationOptions | None = None,
                     backends: dict[str, Any] | None = None,
                     expect_status: int | None = 0) -> Daemon:
    """Run a Daemon in this thread's event loop until ``done(daemon)`` or timeout;
    its exit status must be ``expect_status`` (None: any)."""
    daemon = Daemon(cfg, scorer=scorer, registry=CollectorRegistry(), options=options,
                    backends=backends,
                    timeouts=Timeouts(drain_s=20, sinks_s=5, probes_s=2))

    async def main() -> int:
        async def watch() -> None:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                if daemon.pipeline is not None and done(daemon):
                    break
            try:  # a failing `during` must still stop the daemon, not hang the test
                if during is not None:
                    await asyncio.to_thread(during, daemon)
            finally:
                daemon.request_stop("test finished")

        watcher = asyncio.create_task(watch())
        status = await daemon.run()
        if watcher.done() and watcher.exception() is not None:
            raise watcher.exception()  # type: ignore[misc]
        watcher.cancel()
        return status

    status = asyncio.run(main())
    assert expect_status is None or status == expect_status, status
    return daemon


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def publish_in_background(publish: Callable[[], bool], every_s: float) -> threading.Thread:
    """Call ``publish()`` every ``every_s`` until it returns False (a growing live stream)."""
    def loop() -> None:
        while publish():
            time.sleep(every_s)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


class ToneBackend:
    """:class:`ToneScorer` behind the model-backend interface (a second model for
    multi-model stations): labels ``other``/``call``, 2 s windows every 1 s."""

    sample_rate = 20000
    window_s = 2.0
    hop_s = 1.0
    labels = ("other", "call")

    def __init__(self, model_id: str = "tone-b") -> None:
        self.tone = ToneScorer()
        self.info: dict[str, Any] = {"architecture": "tone-fake-backend", "device": "cpu"}
        self.windows = 0

    def prepare(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        return self.tone.frontend.prepare(samples, sample_rate)

    def prepare_batch(self, windows: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        return self.tone.frontend.prepare_batch(windows, sample_rate)

    def predict(self, waves: np.ndarray) -> np.ndarray:
        self.windows += len(waves)
        call = self.tone.score_waves(waves)
        return np.stack([1.0 - call, call], axis=1)
