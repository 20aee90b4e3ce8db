"""Ending an asyncio task for sure: the one way listener cancels a looping task.

Python 3.11's ``asyncio.wait_for`` returns the awaited result, instead of
raising, when a cancel arrives in the same loop turn as that result (the
3.12 rewrite fixed it). A loop built on ``wait_for`` (a delivery retrying a
POST, a scheduler waiting for work) then loses the cancel and goes on, and
whoever awaits it after one ``cancel()`` waits for ever. Seen here: 1 close
of the webhook sink in 150 hung.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

_RECANCEL_S = 0.2


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
