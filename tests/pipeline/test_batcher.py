"""The shared batcher: fair across stations, bounded per station, latency-bounded,
and each score goes back to its own window whatever the batch held."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from listener.metrics import MetricFamilies, Metrics
from listener.pipeline.batcher import SharedBatcher


@dataclass(frozen=True)
class Item:
    station: str
    index: int
    wave: np.ndarray


def _score(waves: np.ndarray) -> np.ndarray:
    """A row-wise model fake: each score depends on its own row only."""
    return np.tanh(waves.mean(axis=1) * 3.0 + waves[:, 0])


def _items(station: str, n: int, seed: int) -> list[Item]:
    rng = np.random.default_rng(seed)
    return [Item(station, i, rng.standard_normal(64).astype(np.float32)) for i in range(n)]


async def _collect(lane, out: list[tuple[Item, float]]) -> None:  # type: ignore[no-untyped-def]
    async for batch, scores in lane.batches():
        out.extend(zip(batch, scores.tolist(), strict=True))


def test_scores_do_not_depend_on_batch_composition() -> None:
    """Three stations share batches of many shapes; each gets the scores it gets alone."""
    async def main() -> dict[str, list[tuple[int, float]]]:
        shared: SharedBatcher[Item] = SharedBatcher(_score, batch_size=5, max_wait_s=0.01)
        lanes = {s: shared.lane(s, max_backlog_s=1000, hop_s=1.0) for s in "abc"}
        got: dict[str, list[tuple[Item, float]]] = {s: [] for s in lanes}
        tasks = [asyncio.create_task(_collect(lanes[s], got[s])) for s in lanes]
        feeds = {s: _items(s, 23 + 7 * k, k) for k, s in enumerate(lanes)}
        for i in range(40):  # uneven interleaving: batches mix stations differently
            for k, s in enumerate(lanes):
                if i % (k + 1) == 0 and feeds[s]:
                    lanes[s].put(feeds[s].pop(0))
            await asyncio.sleep(0.002 * (i % 3))
        for s in lanes:
            for item in feeds[s]:
                lanes[s].put(item)
            lanes[s].close()
        await asyncio.gather(*tasks)
        await shared.aclose()
        assert shared.batches_scored > 3
        return {s: [(it.index, sc) for it, sc in got[s]] for s in got}

    got = asyncio.run(main())
    for k, s in enumerate("abc"):
        alone = _items(s, 23 + 7 * k, k)
        expected = [(it.index, float(v)) for it, v in
                    zip(alone, _score(np.stack([it.wave for it in alone])), strict=True)]
        assert got[s] == expected  # same order, bit-identical scores


def test_a_station_catching_up_gets_a_fair_share_only() -> None:
    """A lane with a long backlog takes one window per turn: the live lane is served first."""
    async def main() -> tuple[list[int], list[str]]:
        order: list[str] = []

        def score(waves: np.ndarray) -> np.ndarray:
            return waves[:, 0]

        shared: SharedBatcher[Item] = SharedBatcher(score, batch_size=4, max_wait_s=0.0)
        late = shared.lane("late", max_backlog_s=1000, hop_s=1.0)
        live = shared.lane("live", max_backlog_s=1000, hop_s=1.0)
        for i in range(200):
            late.put(Item("late", i, np.full(4, float(i), np.float32)))
        live.put(Item("live", 0, np.zeros(4, np.float32)))
        live.put(Item("live", 1, np.zeros(4, np.float32)))
        sizes: list[int] = []

        async def watch(lane, name: str) -> None:  # type: ignore[no-untyped-def]
            async for batch, _ in lane.batches():
                order.extend(name for _ in batch)
                if name == "live":
                    sizes.append(shared.batches_scored)
                    if len(sizes) == 1:
                        lane.close()
                        late.close()

        await asyncio.gather(watch(late, "late"), watch(live, "live"))
        await shared.aclose()
        return sizes, order

    sizes, order = asyncio.run(main())
    assert sizes == [1]  # both live windows rode in the very first batch
    assert order[:4].count("live") == 2


def test_backlog_limit_sheds_only_that_stations_oldest_windows() -> None:
    async def main() -> tuple[list[int], list[int], float]:
        reg = MetricFamilies(CollectorRegistry())
        shared: SharedBatcher[Item] = SharedBatcher(_score, batch_size=8, max_wait_s=0.0)
        m_busy = Metrics(reg, "busy")
        busy = shared.lane("busy", max_backlog_s=5, hop_s=1.0, metrics=m_busy)
        calm = shared.lane("calm", max_backlog_s=5, hop_s=1.0, metrics=Metrics(reg, "calm"))
        for item in _items("busy", 12, 1):  # nothing scores until the loop yields
            busy.put(item)
        for item in _items("calm", 3, 2):
            calm.put(item)
        busy.close()
        calm.close()
        got: dict[str, list[tuple[Item, float]]] = {"busy": [], "calm": []}
        await asyncio.gather(_collect(busy, got["busy"]), _collect(calm, got["calm"]))
        await shared.aclose()
        dropped = m_busy.dropped_seconds["backlog"]._value.get()
        return [i.index for i, _ in got["busy"]], [i.index for i, _ in got["calm"]], dropped

    busy, calm, dropped = asyncio.run(main())
    assert busy == [7, 8, 9, 10, 11]  # the 7 oldest were shed, the newest 5 s kept
    assert calm == [0, 1, 2]
    assert dropped == 7.0


def test_a_lone_window_waits_at_most_max_wait() -> None:
    async def main() -> float:
        shared: SharedBatcher[Item] = SharedBatcher(_score, batch_size=64, max_wait_s=0.05)
        lane = shared.lane("a", max_backlog_s=100, hop_s=1.0)
        started = time.monotonic()
        lane.put(_items("a", 1, 0)[0])
        async for _batch, _scores in lane.batches():
            break
        waited = time.monotonic() - started
        lane.close()
        lane.shutdown()
        await shared.aclose()
        return waited

    waited = asyncio.run(main())
    assert 0.04 <= waited < 1.0


def test_a_model_failure_reaches_the_stations_in_that_batch() -> None:
    def broken(waves: np.ndarray) -> np.ndarray:
        raise RuntimeError("model exploded")

    async def main() -> None:
        shared: SharedBatcher[Item] = SharedBatcher(broken, batch_size=2, max_wait_s=0.0)
        lane = shared.lane("a", max_backlog_s=100, hop_s=1.0)
        lane.put(_items("a", 1, 0)[0])
        lane.close()
        try:
            with pytest.raises(RuntimeError, match="model exploded"):
                async for _ in lane.batches():
                    pass
        finally:
            await shared.aclose()

    asyncio.run(main())


def test_a_lane_whose_reader_failed_keeps_nothing_more() -> None:
    """After a failed batch ends a lane's consumer, what the station still puts
    (until it is stopped and rebuilt) is neither scored for it nor kept."""
    calls = []

    def first_fails(waves: np.ndarray) -> np.ndarray:
        calls.append(len(waves))
        if len(calls) == 1:
            raise RuntimeError("model exploded")
        return _score(waves)

    async def main() -> None:
        shared: SharedBatcher[Item] = SharedBatcher(first_fails, batch_size=1, max_wait_s=0.0)
        lane = shared.lane("a", max_backlog_s=100, hop_s=1.0)
        lane.put(_items("a", 1, 0)[0])
        try:
            with pytest.raises(RuntimeError, match="model exploded"):
                async for _ in lane.batches():
                    pass
            for item in _items("a", 50, 1):
                lane.put(item)
                await asyncio.sleep(0)
            await asyncio.sleep(0.05)
            assert lane.backlog_s == 0
            assert calls == [1]
        finally:
            await shared.aclose()

    asyncio.run(main())


def test_a_batch_that_fails_to_form_reaches_its_stations_and_scoring_goes_on() -> None:
    """A model answering the wrong number of scores fails that batch for each
    station in it; the scheduler lives on and scores the next batch."""
    calls = []

    def short_once(waves: np.ndarray) -> np.ndarray:
        calls.append(len(waves))
        return _score(waves)[:1] if len(calls) == 1 else _score(waves)

    async def main() -> None:
        shared: SharedBatcher[Item] = SharedBatcher(short_once, batch_size=2, max_wait_s=0.0)
        a, b = (shared.lane(s, max_backlog_s=100, hop_s=1.0) for s in "ab")
        a.put(_items("a", 1, 0)[0])
        b.put(_items("b", 1, 1)[0])
        try:
            for lane in (a, b):
                with pytest.raises(ValueError, match="for a batch of 2 windows"):
                    await asyncio.wait_for(anext(aiter(lane.batches())), 2)
            c = shared.lane("c", max_backlog_s=100, hop_s=1.0)
            c.put(_items("c", 1, 2)[0])
            c.close()
            got: list[tuple[Item, float]] = []
            await asyncio.wait_for(_collect(c, got), 2)
            assert len(got) == 1 and calls == [2, 1]
        finally:
            await shared.aclose()

    asyncio.run(main())


def test_a_window_of_another_length_is_refused_by_name() -> None:
    async def main() -> None:
        shared: SharedBatcher[Item] = SharedBatcher(_score, batch_size=2, max_wait_s=0.0)
        a, b = (shared.lane(s, max_backlog_s=100, hop_s=1.0) for s in ("rpi_a", "rpi_b"))
        a.put(Item("a", 0, np.zeros(64, np.float32)))
        with pytest.raises(ValueError, match=r"rpi_b: a window of shape \(96,\)"):
            b.put(Item("b", 0, np.zeros(96, np.float32)))
        assert b.backlog_s == 0
        await shared.aclose()

    asyncio.run(main())


class FakeClock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_wait_deadline_follows_the_injected_clock() -> None:
    """A lone lane (a single station): a short batch waits until the clock passes
    ``max_wait_s``, a full one goes at once; no wall-clock sleep decides it."""
    async def main() -> list[int]:
        clock = FakeClock()
        shared: SharedBatcher[Item] = SharedBatcher(_score, batch_size=4, max_wait_s=30.0,
                                                    clock=clock)
        lane = shared.lane("solo", max_backlog_s=1000, hop_s=1.0)
        sizes: list[int] = []

        async def collect() -> None:
            async for batch, _ in lane.batches():
                sizes.append(len(batch))

        task = asyncio.create_task(collect())
        items = _items("solo", 7, 3)
        for item in items[:2]:
            lane.put(item)
        for _ in range(20):  # the loop runs freely: the 30 s deadline is not reached
            await asyncio.sleep(0)
        assert sizes == []
        clock.now += 29.9
        shared.wake()
        for _ in range(20):
            await asyncio.sleep(0)
        assert sizes == []
        clock.now += 0.2  # past max_wait_s: the short batch goes
        shared.wake()
        while not sizes:
            await asyncio.sleep(0.001)
        for item in items[2:6]:  # a full batch needs no deadline
            lane.put(item)
        while len(sizes) < 2:
            await asyncio.sleep(0.001)
        lane.put(items[6])
        lane.close()  # a closing lane's last window goes at once
        await task
        await shared.aclose()
        return sizes

    assert asyncio.run(main()) == [2, 4, 1]


def test_backlog_shedding_logs_by_the_injected_clock(caplog: pytest.LogCaptureFixture) -> None:
    """Past its limit a lane drops its oldest windows, counted; the warning is
    rate-limited by the batcher's clock (once per 10 s of it)."""
    async def main() -> int:
        clock = FakeClock()
        shared: SharedBatcher[Item] = SharedBatcher(_score, batch_size=100, max_wait_s=60.0,
                                                    clock=clock)
        lane = shared.lane("slow", max_backlog_s=5, hop_s=1.0)
        for item in _items("slow", 8, 4):
            lane.put(item)
        clock.now += 11.0
        for item in _items("slow", 3, 5):
            lane.put(item)
        await shared.aclose()
        return lane.dropped_windows

    with caplog.at_level("WARNING"):
        assert asyncio.run(main()) == 6
    assert sum("dropping the oldest audio" in r.getMessage() for r in caplog.records) == 2
