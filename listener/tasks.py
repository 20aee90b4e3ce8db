"""Tasks and threads under asyncio: ending a looping task for sure, and blocking
work in a thread that never holds the process's exit.

Python 3.11's ``asyncio.wait_for`` returns the awaited result, instead of
raising, when a cancel arrives in the same loop turn as that result (the
3.12 rewrite fixed it). A loop built on ``wait_for`` (a delivery retrying a
POST, a scheduler waiting for work) then loses the cancel and goes on, and
whoever awaits it after one ``cancel()`` waits for ever. Seen here: 1 close
of the webhook sink in 150 hung. :func:`cancel_and_wait` is the one way
listener cancels a looping task.

``asyncio.to_thread``'s threads are joined when the loop's executor shuts
down, so a call stuck in one (a POST to an endpoint trickling its answer)
holds ``asyncio.run()`` and the process's exit; :func:`in_daemon_thread` runs
such a call in a daemon thread instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

_RECANCEL_S = 0.2
_T = TypeVar("_T")


async def cancel_and_wait(task: asyncio.Future[Any], msg: str | None = None, *,
                          limit_s: float | None = None) -> bool:
    """Cancel ``task``, again every 0.2 s, until it has ended; True once it has.

    ``limit_s`` bounds the wait (False: still running after it). The task's
    outcome is left to the caller (``await`` or ``gather(return_exceptions=True)``).
    """
    deadline = None if limit_s is None else time.monotonic() + limit_s
    while not task.done():
        left = _RECANCEL_S if deadline is None else min(_RECANCEL_S,
                                                        deadline - time.monotonic())
        if left <= 0:
            return False
        task.cancel(msg)
        await asyncio.wait({task}, timeout=left)
    return True


async def in_daemon_thread(fn: Callable[..., _T], *args: object, name: str) -> _T:
    """``fn(*args)`` in a daemon thread named ``name``; awaiting it may be given up
    (a deadline, a cancel) while the thread runs on and ends by itself."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[_T] = loop.create_future()

    def settle(value: _T | None, err: BaseException | None) -> None:
        if fut.done():
            return  # given up on
        if err is not None:
            fut.set_exception(err)
        else:
            fut.set_result(value)  # type: ignore[arg-type]

    def run() -> None:
        try:
            value, err = fn(*args), None
        except BaseException as exc:  # handed to the awaiting task
            value, err = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, value, err)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await fut
