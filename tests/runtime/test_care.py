"""The runner's periodic care: one station's failure does not end the others' care."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from listener.config import StreamConfig
from listener.runtime.runner import Runner
from listener.runtime.unit import State


class Pipeline:
    """Stands in for a station pipeline: counts the care's stall checks, or fails them."""

    def __init__(self, fails: bool) -> None:
        self.fails, self.checks = fails, 0

    async def decide_stalled(self, idle_s: float) -> int:
        self.checks += 1
        if self.fails:
            raise RuntimeError("a sink failed on the stalled clip")
        return 0


def _unit(name: str, fails: bool) -> SimpleNamespace:
    cfg = SimpleNamespace(stream=StreamConfig(node=name, stale_after_s=4.0))
    station = SimpleNamespace(cfg=cfg, pipeline=Pipeline(fails), emitters=())
    return SimpleNamespace(id=name, cfg=cfg, station=station, state=State.RUNNING)


def test_a_failing_station_is_logged_and_the_others_are_still_tended(
        caplog: pytest.LogCaptureFixture) -> None:
    # Before, the exception ended the care loop: no more stall decisions,
    # refused-record retries or encounter ends for any station, and no log.
    units = [_unit("rpi_a", fails=True), _unit("rpi_b", fails=False)]
    runner = SimpleNamespace(units=units)  # all that Runner._tend reads

    async def main() -> None:
        care = asyncio.create_task(Runner._tend(runner))  # type: ignore[arg-type]
        await asyncio.sleep(2.5)  # every 1 s: a quarter of 4 s
        assert not care.done()
        care.cancel()

    with caplog.at_level(logging.ERROR, "listener.runtime.runner"):
        asyncio.run(main())
    assert units[0].station.pipeline.checks >= 2 and units[1].station.pipeline.checks >= 2
    assert any("station rpi_a: periodic care failed" in r.getMessage() for r in caplog.records)
