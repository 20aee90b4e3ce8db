"""A console over real files: detection events, clip audio/pictures, a live audio feed.

The clips and the live audio are cut from the ONC hydrophone recording in
tests/data/recordings (see tests/data/ATTRIBUTION.md); the events are real
``event_json`` records written the way the JSON-lines sink writes them.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf

from listener.audio.history import AudioHistory
from listener.config import DetectionConfig, StationConfig
from listener.detection.rule import WindowScore, decide_clip
from listener.events.png import encode_png
from listener.events.records import clip_file_names, iso_utc, make_detection_event
from listener.events.sinks.clips import clip_picture
from listener.events.sinks.jsonl import dumps_event
from listener.web.coverage import CoverageLedger
from listener.web.views import LiveFeed, StationView

RECORDING = Path(__file__).resolve().parents[1] / "data" / "recordings" / \
    "onc_naxys_hydrophone_44000hz.wav"
STATION = StationConfig(id="rpi_orcasound_lab", name="Orcasound Lab",
                        longitude=-123.1735774, latitude=48.5583362)
MODEL = {"id": "orcahello-srkw", "architecture": "resnet50", "sha256": "ab" * 32}
T0 = datetime(2026, 11, 29, 14, 5, 0, tzinfo=UTC)


def recording(seconds: float) -> tuple[np.ndarray, int]:
    info = sf.info(RECORDING)
    data, rate = sf.read(RECORDING, frames=int(min(seconds, info.duration) * info.samplerate),
                         dtype="float32", always_2d=True)
    return data[:, 0], rate


def write_detections(folder: Path, count: int = 2, station_id: str = STATION.id) -> list[str]:
    """``count`` detection events of ``station_id`` in ``folder/events.jsonl`` with their
    clip files."""
    station = STATION.model_copy(update={"id": station_id})
    clips = folder / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    audio, rate = recording(6.0)
    cfg = DetectionConfig()
    ids = []
    with open(folder / "events.jsonl", "ab") as fh:
        for k in range(count):
            utc = T0 + timedelta(minutes=10 * k)
            windows = [WindowScore(i, i + 2.0, 0.9 if 10 <= i < 14 + k else 0.1,
                                   utc + timedelta(seconds=i)) for i in range(59)]
            event = make_detection_event(decide_clip(windows, 0.0, 60.0, cfg), station=station,
                                         model=MODEL, detection=cfg, stream_key="lab/hls/1")
            wav, png = clip_file_names(event, "flac")
            sf.write(clips / wav, audio, rate, format="FLAC", subtype="PCM_16")
            (clips / png).write_bytes(encode_png(clip_picture(audio, rate, max_width=600,
                                                              height=200)))
            fh.write(dumps_event(event, audio_base_uri="https://example.org/clips",
                                 image_base_uri="https://example.org/clips") + b"\n")
            ids.append(event.id)
    return ids


def make_view(folder: Path, *, detections: int = 2, station_id: str = STATION.id) -> StationView:
    """A station view over files in ``folder`` and an empty live feed."""
    write_detections(folder, detections, station_id) if detections else None
    history = AudioHistory(max_s=120.0)
    ledger = CoverageLedger.for_station(folder / "state", station_id)
    status = {"name": STATION.name, "stream_url": "http://127.0.0.1/lab/live.m3u8",
              "state": "running", "ready": True, "lag_s": 4.2, "last_segment_s_ago": 1.5,
              "decoder_restarts": 0, "last_error": None,
              "model": {"id": MODEL["id"], "device": "cpu", "precision": "float32"}}
    return StationView(station_id, lambda: dict(status), LiveFeed(history),
                       events_path=folder / "events.jsonl", clips_dir=folder / "clips",
                       coverage=ledger)


async def feed_live(view: StationView, seconds: float = 30.0, block_s: float = 0.25,
                    pace: float = 1.0) -> None:
    """Append the recording to the view's history block by block (``pace`` x real time),
    recording each second as scored and a score per second in the live feed."""
    audio, rate = recording(seconds)
    history = view.live.history
    assert history is not None
    step = int(block_s * rate)
    t0 = datetime.now(UTC).timestamp()
    for i, start in enumerate(range(0, audio.size - step + 1, step)):
        offset = start / rate
        history.append(offset, audio[start:start + step], rate)
        if (i + 1) % round(1 / block_s) == 0:
            sec = offset + block_s - 1.0
            view.live.observe(sec, t0 + sec, 0.8 if int(sec) % 10 == 3 else 0.1)
            if view.coverage is not None:
                view.coverage.record(t0 + sec, t0 + sec + 1.0, "scored")
        await asyncio.sleep(block_s / pace)


FLEET = ("rpi_bush_point", "rpi_port_townsend", "rpi_sunset_bay", "rpi_north_sjc",
         "rpi_mast_center", "rpi_andrews_bay", "rpi_point_robinson", "rpi_beach_camp",
         "rpi_lime_kiln", "rpi_haro_strait", "rpi_tahlequah")


def fleet_views(folder: Path, count: int) -> list[StationView]:
    """``count`` more stations as a fleet's overview shows them: most listening, one
    failing to fetch since two hours, one stopped last night; a few detections today."""
    now = datetime.now(UTC).timestamp()
    views = []
    for k, station in enumerate(FLEET[:count]):
        sub = folder / station
        sub.mkdir(parents=True, exist_ok=True)
        ledger = CoverageLedger.for_station(sub / "state", station)
        status: dict[str, object] = {"name": station.removeprefix("rpi_").replace("_", " ").title(),
                                     "state": "running", "ready": True, "lag_s": 3.0 + k % 4 * 1.7,
                                     "last_segment_s_ago": 2.0 + k % 3 * 3.0, "last_error": None,
                                     "audio_level_dbfs": -62.0 + k}
        ledger.record(now - 86400, now - 30000 + k * 600, "scored")
        if k == 1:  # the node answers 404 since two hours
            ledger.record(now - 30000 + k * 600, now - 7200, "scored")
            ledger.record(now - 7200, now - 5, "lost", "gap")
            status.update(ready=False, readiness="waiting for the first segment",
                          last_segment_s_ago=7203.0, lag_s=None,
                          last_error={"message": "latest.txt: HTTP 404 Not Found",
                                      "age_s": 4.0})
        elif k == 2:  # listening to digital silence: a dead hydrophone
            ledger.record(now - 30000 + k * 600, now, "scored")
            status.update(audio_level_dbfs=-120.0)
        elif k == 5:  # far quieter than its model trained at since a gain change
            ledger.record(now - 30000 + k * 600, now, "scored")
            status.update(audio_level_dbfs=-95.0, level_outside=[
                {"model": "orcahello-srkw", "side": "below", "trained_dbfs": [-81.0, -1.0]}])
        elif k == 4:  # stopped last night
            status.update(state="stopped", ready=False, readiness="not running", lag_s=None,
                          last_segment_s_ago=None)
        else:
            ledger.record(now - 30000 + k * 600 + 900 * (k % 3), now, "scored")
        with open(sub / "events.jsonl", "wb") as fh:
            for n in range(k % 4):
                utc = datetime.fromtimestamp(now - 600 * (n + 1) - 60 * k, UTC)
                fh.write(json.dumps({"id": f"{k:04x}{n:04x}-0000-5000-8000-000000000000",
                                     "kind": "detection", "timestamp": iso_utc(utc),
                                     "whaleFoundConfidence": 70.0, "modelId": "orcahello-srkw"}
                                    ).encode() + b"\n")
        views.append(StationView(station, partial(dict, status), LiveFeed(None),
                                 events_path=sub / "events.jsonl", coverage=ledger))
    return views
