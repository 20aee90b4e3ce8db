"""OrcasoundSource when latest.txt disagrees with the resume point."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import cast

from support.hls_server import LiveHlsServer

from listener.sources.hls import Gap, OrcasoundSource, Position, Segment
from listener.sources.http_client import HttpClient

NODE = "rpi_test_node"
TS_A = 1_700_000_000
TS_B = 1_700_003_600
Records = AsyncGenerator[Segment | Gap, None]


def test_one_stale_latest_txt_at_start_up_does_not_leave_the_resume_folder(
        hls_server: LiveHlsServer, http_client: HttpClient) -> None:
    hls_server.start_folder(NODE, TS_A)  # days old, dead
    for _ in range(50):
        hls_server.publish(NODE, b"a", 10.0)
    hls_server.start_folder(NODE, TS_B)  # live, followed when we stopped
    for _ in range(8):
        hls_server.publish(NODE, b"b", 10.0)
    # A CDN copy of latest.txt from before the node's restart, read once.
    hls_server.serve_instead(f"/{NODE}/latest.txt", f"{TS_A}\n".encode())
    source = OrcasoundSource(hls_server.base_url, NODE, http_client, poll_interval_s=0.02,
                             finish_s=0.0)

    async def main() -> list[Segment | Gap]:
        out: list[Segment | Gap] = []
        resume = Position(source.folder_key(TS_B), 5)
        async with aclosing(cast(Records, source.segments(resume))) as items:
            async for item in items:
                out.append(item)
                hls_server.publish(NODE, b"b", 10.0)  # B keeps growing
                # Past the 8 polls after which a queued folder is switched to anyway.
                if hls_server.count(f"/{NODE}/hls/{TS_B}/live.m3u8") >= 12:
                    return out
        return out

    items = asyncio.run(asyncio.wait_for(main(), 10.0))
    assert [(i.stream_key, i.sequence if isinstance(i, Segment) else "gap")
            for i in items] == [
        (source.folder_key(TS_B), n) for n in range(6, 6 + len(items))]
    assert hls_server.count(f"/{NODE}/hls/{TS_A}/live.m3u8") == 0


def test_resume_into_an_older_folder_gives_it_the_whole_grace(
        hls_server: LiveHlsServer, http_client: HttpClient) -> None:
    hls_server.start_folder(NODE, TS_A)  # followed when we stopped, still uploading
    for _ in range(4):
        hls_server.publish(NODE, b"a", 10.0)
    hls_server.start_folder(NODE, TS_B)
    hls_server.publish(NODE, b"b", 10.0)
    source = OrcasoundSource(hls_server.base_url, NODE, http_client, poll_interval_s=0.02,
                             finish_s=0.75)

    async def main() -> float:
        t0 = time.monotonic()
        resume = Position(source.folder_key(TS_A), 1)
        async with aclosing(cast(Records, source.segments(resume))) as items:
            async for item in items:
                if item.stream_key == source.folder_key(TS_B):
                    break
                hls_server.publish(NODE, b"a", 10.0, folder=TS_A)  # A keeps growing
        return time.monotonic() - t0

    # A folder that keeps growing is switched away from only at the bound,
    # 4 x finish_s after the switch was queued, not after 8 polls.
    assert asyncio.run(asyncio.wait_for(main(), 10.0)) >= 4 * 0.75
