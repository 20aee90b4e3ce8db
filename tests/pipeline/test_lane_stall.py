"""A model lane decides the clip its stream stalled in, once, and remembers it."""

from __future__ import annotations

import asyncio
import concurrent.futures
from types import SimpleNamespace

import numpy as np

from listener.audio.windows import Window
from listener.config.models import RuleConfig
from listener.detection.labels import LabelledClip, LabelRule
from listener.pipeline.batcher import SharedBatcher
from listener.pipeline.lane import ModelLane, Tagged
from listener.pipeline.station import StationPipeline

_EMPTY = np.zeros(0, dtype=np.float32)


class Clips:
    """The lane's handler: notes each clip decided, as (stream, start, end)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, float, float]] = []

    async def labelled_clip(self, clip: LabelledClip, stream_key: str) -> bool:
        self.got.append((stream_key, clip.clip.start_s, clip.clip.end_s))
        return True


def _score(waves: np.ndarray) -> np.ndarray:
    return waves[:, 0]  # each window carries its own score


def _tagged(key: str, start: int) -> Tagged:
    wave = np.full(8, 0.9 if 5 <= start < 25 else 0.1, dtype=np.float32)
    return Tagged(Window(float(start), start + 2.0, _EMPTY, 16000), key, wave)


def test_a_stalled_clip_is_decided_once_and_its_rest_keeps_its_start_across_streams() -> None:
    async def main() -> list[tuple[str, float, float]]:
        shared: SharedBatcher[Tagged] = SharedBatcher(_score, batch_size=8, max_wait_s=0.0)
        clips = Clips()
        rule = LabelRule(["other", "call"], ["call"], RuleConfig(), 2.0, 1.0, 60.0)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            lane = ModelLane("m", 0, rule, lambda w, r: w, shared.lane(
                "m", max_backlog_s=1000, hop_s=1.0), clips, pool=pool)
            consumer = asyncio.create_task(lane.consume())
            for i in range(39):  # stream A: audio up to 40 s, then nothing
                lane.batcher.put(_tagged("A", i))
            while lane.windows_scored < 39:
                await asyncio.sleep(0.01)
            assert await lane.decide_stalled(3600.0) == 0  # not idle for long yet
            assert await lane.decide_stalled(0.0) == 1
            assert await lane.decide_stalled(0.0) == 0  # nothing open any more
            for i in range(0, 70):  # another stream comes, then A's rest
                lane.batcher.put(_tagged("B", i))
            for i in range(39, 62):
                lane.batcher.put(_tagged("A", i))
            lane.batcher.close()
            await consumer
            await shared.aclose()
        return clips.got

    got = asyncio.run(main())
    assert got[0] == ("A", 0.0, 40.0)
    assert ("B", 0.0, 60.0) in got
    # A's rest starts where its first part ended, after B came between: never
    # again at 0 s, which would repeat the first part's start (and event id).
    assert [c for c in got if c[0] == "A"] == [("A", 0.0, 40.0), ("A", 40.0, 60.0)]


def test_the_models_of_a_station_cut_a_stalled_clip_at_one_offset_so_their_clips_pair() -> None:
    # Windows of 2 s and 2.5 s end at 40 and 39.5 s when the audio stops at 40 s;
    # cut at their own ends, the rests would start apart and never pair.
    def tagged(start: float, window_s: float) -> Tagged:
        wave = np.full(8, 0.1, dtype=np.float32)
        return Tagged(Window(start, start + window_s, _EMPTY, 16000), "A", wave)

    async def main() -> dict[str, list[tuple[str, float, float]]]:
        shared: SharedBatcher[Tagged] = SharedBatcher(_score, batch_size=8, max_wait_s=0.0)
        got: dict[str, Clips] = {"two": Clips(), "two-and-a-half": Clips()}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            lanes = [ModelLane(name, i, LabelRule(["other", "call"], ["call"], RuleConfig(),
                                                  w, 1.0, 60.0), lambda x, r: x,
                               shared.lane(name, max_backlog_s=1000, hop_s=1.0), got[name],
                               pool=pool)
                     for i, (name, w) in enumerate([("two", 2.0), ("two-and-a-half", 2.5)])]
            consumers = [asyncio.create_task(lane.consume()) for lane in lanes]
            for lane, w in zip(lanes, (2.0, 2.5), strict=True):
                for i in range(int(40 - w) + 1):
                    lane.batcher.put(tagged(float(i), w))
            while sum(lane.windows_scored for lane in lanes) < 39 + 38:
                await asyncio.sleep(0.01)
            pipeline = SimpleNamespace(lanes=lanes)  # what decide_stalled reads
            assert await StationPipeline.decide_stalled(pipeline, 0.0) == 2  # type: ignore[arg-type]
            for lane, w in zip(lanes, (2.0, 2.5), strict=True):
                for i in range(39, 62):  # the stream is back
                    lane.batcher.put(tagged(float(i), w))
                lane.batcher.close()
            await asyncio.gather(*consumers)
            await shared.aclose()
        return {name: clips.got for name, clips in got.items()}

    got = asyncio.run(main())
    assert got["two"][:2] == got["two-and-a-half"][:2] == [("A", 0.0, 40.0), ("A", 40.0, 60.0)]
