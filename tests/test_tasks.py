"""cancel_and_wait ends a task that loses a cancel, and gives up on one that never ends."""

from __future__ import annotations

import asyncio
import time

from listener.tasks import cancel_and_wait


async def _loses_first_cancel(log: list[str]) -> None:
    # As a loop around Python 3.11's wait_for does when the awaited result and
    # the cancel meet in one loop turn.
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        log.append("lost")
    await asyncio.sleep(3600)


async def _ignores_cancels(released: asyncio.Event) -> None:
    while not released.is_set():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass


def test_a_lost_cancel_is_sent_again_and_a_stubborn_task_is_left_after_the_limit() -> None:
    async def main() -> tuple[bool, list[str], bool, float]:
        log: list[str] = []
        task = asyncio.create_task(_loses_first_cancel(log))
        await asyncio.sleep(0)
        ended = await asyncio.wait_for(cancel_and_wait(task, "stop"), 5)
        released = asyncio.Event()
        stubborn = asyncio.create_task(_ignores_cancels(released))
        await asyncio.sleep(0)
        t0 = time.monotonic()
        gave_up = not await cancel_and_wait(stubborn, limit_s=0.5)
        waited = time.monotonic() - t0
        released.set()  # leave no task running
        stubborn.cancel()
        await stubborn
        return ended and task.cancelled(), log, gave_up, waited

    ended, log, gave_up, waited = asyncio.run(main())
    assert ended and log == ["lost"]
    assert gave_up and 0.4 < waited < 2.0
