"""``listener demo``: the whole system on one machine, with nothing to set up.

A bundled real recording (L pod calls from an Orcasound hydrophone) is cut by
ffmpeg into Orcasound-style MPEG-TS segments and published as a live HLS
stream on 127.0.0.1; the real daemon follows it, scores every window, writes
events to a JSON lines file and serves the console, /metrics, /healthz and
/readyz. Everything it writes lives in one working folder, named at the
start and removed at the end (``--keep`` keeps it).

Without ``--weights`` it uses the bundled demo model
(``listener/data/demo_resnet18.safetensors``): a ResNet18 trained by
``scripts/train_demo_model.sh`` on about an hour of open labelled calls
and hydrophone noise, never on this recording. It is not the OrcaHello production
model, and the demo says so. Give ``--weights`` the production checkpoint to
see its detections, or ``--config`` a station file (several models, say):
the demo node then serves that station, with its models, decision rule and
frontend, and the demo's own stream, outputs, state and port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from listener.config import (
    ClipSinkConfig,
    Config,
    JsonlSinkConfig,
    MetricsConfig,
    ModelConfig,
    OutputsConfig,
    StateConfig,
    StationConfig,
    StreamConfig,
    load_config,
)
from listener.demo.server import LiveNode, folder_time_for, make_segments
from listener.events.emitter import Emitter
from listener.model.bundled import BUNDLED_WEIGHTS, with_default_weights, with_weights
from listener.runtime.builder import StationOptions
from listener.runtime.daemon import Daemon

log = logging.getLogger(__name__)

RECORDING = Path(__file__).parents[1] / "data" / "lpod_orcasound_22050hz.wav"
DEMO_WEIGHTS = BUNDLED_WEIGHTS
NODE = "rpi_demo"
PRELISTED = 6  # one minute already "live" when the demo starts, so clips close at once


def station_config(config: str | None, weights: str | None) -> tuple[Config, str | None]:
    """The station the demo serves (``--config``, else the demo node's) with its weights.

    Returns the config and the bundled-model notice when the bundled model
    stands in for missing weights.
    """
    if config:
        base = load_config(config)
    else:
        base = Config(station=StationConfig(id=NODE, name="Demo node (bundled L pod recording)",
                                            longitude=-123.1735774, latitude=48.5583362),
                      model=ModelConfig(batch_size=8))
    return with_default_weights(with_weights(base, Path(weights) if weights else None))


def node_name(cfg: Config) -> str:
    """The demo node's name: the station's own Orcasound node when it has one."""
    stream = cfg.stream
    return stream.node if stream is not None and stream.kind == "orcasound" and stream.node \
        else NODE


def demo_config(station: Config, base_url: str, workdir: Path, port: int) -> Config:
    """``station`` following the demo node, writing into ``workdir`` and serving on ``port``."""
    return station.model_copy(update={
        "stream": StreamConfig(kind="orcasound", base_url=base_url, node=node_name(station),
                               poll_interval_s=2.0, start_segments_back=PRELISTED),
        # Clips too, so the console shows each detection's picture and sound; no
        # "after" context, so a clip is written at once and never holds up the stop.
        "outputs": OutputsConfig(jsonl=JsonlSinkConfig(path=workdir / "events.jsonl"),
                                 clips=ClipSinkConfig(dir=workdir / "clips", after_s=0.0),
                                 log=True),
        "metrics": MetricsConfig(host="127.0.0.1", port=port),
        "state": StateConfig(dir=workdir / "state"),
    })


def _say_new_events(path: Path, say: Callable[[str], None], seen: int) -> int:
    """Say the events after the first ``seen`` lines of ``path``; returns the lines read."""
    if not path.exists():
        return seen
    lines = path.read_text(encoding="utf-8").splitlines()
    for line in lines[seen:]:
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        say(f"event {doc.get('kind')}: {doc.get('timestamp')} confidence "
            f"{doc.get('whaleFoundConfidence')} (model {doc.get('modelId')})")
    return len(lines)


async def _follow_events(path: Path, say: Callable[[str], None], stop: asyncio.Event) -> None:
    seen = 0
    while not stop.is_set():
        seen = _say_new_events(path, say, seen)
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass
    # The daemon may have written events since the last read (its shutdown flushes).
    _say_new_events(path, say, seen)


def port_is_free_choice(daemon: Daemon) -> bool:
    return daemon.cfg.metrics.port == 0


async def _run(daemon: Daemon, duration_s: float, events: Path,
               say: Callable[[str], None]) -> int:
    async def stop_later() -> None:
        await asyncio.sleep(duration_s)
        daemon.request_stop(f"demo ran {duration_s:.0f} s")

    async def say_where() -> None:  # port 0: the one the OS chose, once serving
        while daemon.probes is None or not daemon.probes.port:
            await asyncio.sleep(0.1)
        say(f"console: {daemon.probes.url}/  (metrics at {daemon.probes.url}/metrics)")

    timer = asyncio.create_task(stop_later())
    where = asyncio.create_task(say_where()) if port_is_free_choice(daemon) else None
    done = asyncio.Event()
    follower = asyncio.create_task(_follow_events(events, say, done))
    try:
        status = await daemon.run()
    finally:
        timer.cancel()
        if where is not None:
            where.cancel()
        done.set()
        await follower
    return status


def run_demo(say: Callable[[str], None], duration_s: float = 90.0,
             weights: str | None = None, port: int = 9108, config: str | None = None,
             keep: bool = False) -> int:
    """Serve the bundled recording as live HLS and run the daemon on it.

    The working folder (segments, events, clips, state) is removed at the
    end, however the demo ends, unless ``keep``.
    """
    station, notice = station_config(config, weights)  # a bad --config fails before any work
    workdir = Path(tempfile.mkdtemp(prefix="listener-demo-"))
    say(f"working folder: {workdir} ({'kept' if keep else 'removed'} at the end"
        f"{'' if keep else '; --keep keeps it'})")
    try:
        return _demo(say, station, notice, workdir, duration_s, port)
    finally:
        if keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            say(f"removed {workdir}")


def _demo(say: Callable[[str], None], station: Config, notice: str | None, workdir: Path,
          duration_s: float, port: int) -> int:
    say(f"making live HLS segments from {RECORDING.name} (real L pod calls) ...")
    segments = make_segments(RECORDING, workdir / "hls", duration_s + PRELISTED * 10 + 20)
    node = LiveNode(node_name(station), folder_time_for(segments, PRELISTED), workdir / "hls",
                    segments)
    node.start(initially=PRELISTED)
    try:
        cfg = demo_config(station, node.base_url, workdir, port)
        daemon = Daemon(cfg, options=StationOptions(
            restart_on_failure=False, allow_random_weights=cfg.model.weights is None))
        _say_setup(say, cfg, notice, node, len(segments), port)
        say(f"running for {duration_s:.0f} s; Ctrl-C stops earlier")
        started = time.monotonic()
        status = asyncio.run(_run(daemon, duration_s, workdir / "events.jsonl", say))
    finally:
        node.stop()
    summary: dict[str, Any] = {}
    if daemon.station is not None:
        summary = {"segments": daemon.station.pipeline.segments_fed,
                   "windows scored": daemon.station.pipeline.windows_scored,
                   "events": _events(daemon.station.emitters)}
    say(f"done in {time.monotonic() - started:.0f} s: "
        + ", ".join(f"{k} {v}" for k, v in summary.items()))
    return status


def _events(emitters: Sequence[Emitter]) -> str:
    """Events emitted: a count, or each model's when several scored the stream."""
    if len(emitters) == 1:
        return str(emitters[0].events_emitted)
    return ", ".join(f"{e.model_info.get('id')} {e.events_emitted}" for e in emitters)


def _say_setup(say: Callable[[str], None], cfg: Config, notice: str | None, node: LiveNode,
               n_segments: int, port: int) -> None:
    """What the demo runs, where to look, in a few lines."""
    if notice:
        say(notice)
    elif cfg.model.weights is not None:
        say(f"weights: {cfg.model.weights} (model id {cfg.model.model_id})")
    else:
        say("weights: NONE GIVEN - a ResNet18 with seeded random weights; its scores are "
            "meaningless. Run `listener demo --weights MODEL.safetensors` for real detections.")
    if cfg.models is not None and len(cfg.models) > 1:
        say("models:  " + ", ".join(f"{m.id} ({m.role})" for m in cfg.models))
    say(f"station: {cfg.station.id}")
    say(f"stream:  {node.base_url}/{node.node}/latest.txt  ({n_segments} segments, "
        f"{PRELISTED} already listed, then one every ~10 s)")
    if port:
        say(f"console: http://127.0.0.1:{port}/  (status, live spectrogram, detections to "
            "review)")
        say(f"metrics: http://127.0.0.1:{port}/metrics  (also /healthz and /readyz)")
    say(f"events:  {cfg.outputs.jsonl.path if cfg.outputs.jsonl else '-'}")
