"""Reading an HLS source in tests: its first records, their sequences, an Orcasound source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import cast

from listener.sources.hls import Gap, HlsSource, OrcasoundSource, Position, Segment
from listener.sources.http_client import HttpClient
from support.hls_server import LiveHlsServer

NODE = "rpi_test_node"
TS_A = 1_700_000_000
TS_B = 1_700_003_600
POLL = 0.02
Item = Segment | Gap
Records = AsyncGenerator[Item, None]  # what segments() is: aclosing() needs aclose


async def take(source: OrcasoundSource | HlsSource, n: int, resume: Position | None = None,
               on_item: Callable[[Item, list[Item]], None] | None = None,
               timeout: float = 5.0) -> list[Item]:
    """The first ``n`` records of ``source.segments(resume)`` (fewer if it ends)."""
    out: list[Item] = []

    async def run() -> None:
        async with aclosing(cast(Records, source.segments(resume))) as items:
            async for item in items:
                out.append(item)
                if on_item is not None:
                    on_item(item, out)
                if len(out) >= n:
                    return

    await asyncio.wait_for(run(), timeout)
    return out


def seqs(items: list[Item]) -> list[object]:
    return [i.sequence if isinstance(i, Segment) else ("gap", i.from_sequence, i.to_sequence)
            for i in items]


def orcasound(server: LiveHlsServer, client: HttpClient, **kw: object) -> OrcasoundSource:
    kw.setdefault("poll_interval_s", POLL)
    kw.setdefault("finish_s", 0.05)
    return OrcasoundSource(server.base_url, NODE, client, **kw)  # type: ignore[arg-type]
