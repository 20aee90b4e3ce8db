"""Detection events for the event-sink tests: the n-th minute's detection at Bush Point."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from listener.config import DetectionConfig, StationConfig
from listener.detection.rule import ClipResult, WindowScore, decide_clip
from listener.events.records import Event, make_detection_event

CFG = DetectionConfig()
STATION = StationConfig(id="rpi_bush_point", name="Bush Point",
                        longitude=-122.6040035, latitude=48.0336664)
MODEL = {"id": "orcahello-srkw", "architecture": "resnet50", "sha256": "cd" * 32}
T0 = datetime(2024, 7, 1, 12, 0, 0, tzinfo=UTC)


def make_event(n: int = 0, start_s: float = 0.0) -> Event:
    """The ``n``-th minute's detection (windows 10..13 hot: seconds 11..13 positive)."""
    start = start_s + 60.0 * n
    utc = T0 + timedelta(seconds=start)
    windows = [WindowScore(start + i, start + i + 2.0, 0.9 if 10 <= i < 14 else 0.1,
                           utc + timedelta(seconds=i)) for i in range(59)]
    clip: ClipResult = decide_clip(windows, start, start + 60.0, CFG)
    return make_detection_event(clip, station=STATION, model=MODEL, detection=CFG,
                                stream_key="rpi_bush_point/hls/1719835200")
