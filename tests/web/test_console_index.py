"""The console's detection index over real files: tailing, de-duplication, rotation, paging.

Issue 20 asks for one timed bound here: a page of results from 100,000 events
in under 200 ms, through the real HTTP server.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry

from listener.web import index as index_module
from listener.web.console import Console
from listener.web.index import MAX_LINE, DetectionIndex, JsonlTail, newest_first
from listener.web.server import WebServer
from listener.web.views import LiveFeed, StationView


def det(n: int, *, day: int = 1, conf: float = 80.0, **extra: Any) -> bytes:
    """A detection line (the fields the index reads, plus what the export carries)."""
    doc = {"id": f"{n:08x}-0000-5000-8000-000000000000", "kind": "detection",
           "timestamp": f"2026-11-{day:02d}T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:"
                        f"{n % 60:02d}.000Z",
           "whaleFoundConfidence": conf, "modelId": "m1", "audioUri": f"x/{n}.flac",
           "imageUri": f"x/{n}.png", "location": {"id": "s"}, **extra}
    return json.dumps(doc).encode() + b"\n"


def ident(n: int) -> str:
    return f"{n:08x}-0000-5000-8000-000000000000"


def review(n: int, verdict: str = "yes") -> bytes:
    return json.dumps({"id": ident(n), "SRKWFound": verdict, "reviewed": True}).encode() + b"\n"


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def test_tail_reads_only_new_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    tail = JsonlTail(path)
    assert tail.read_new() == (False, [])  # no file yet
    append(path, det(1) + det(2)[:40])  # the second line is still being written
    restarted, lines = tail.read_new()
    assert not restarted and [x.doc["id"] for x in lines] == [ident(1)]
    assert tail.offset == len(det(1))
    append(path, det(2)[40:] + b"not json\n" + b"[1, 2]\n" + det(3))
    _, lines = tail.read_new()
    assert [x.doc["id"] for x in lines] == [ident(2), ident(3)] and tail.bad_lines == 2
    # Offsets point at the lines: the full record can be read back.
    with open(path, "rb") as fh:
        fh.seek(lines[1].offset)
        assert json.loads(fh.read(lines[1].length))["id"] == ident(3)


def test_a_line_with_nan_or_infinity_is_skipped_and_the_list_still_answers(
        tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    # Python's json writes these for a float('nan'); no JSON parser outside Python reads them.
    append(path, det(1) + det(2, conf=float("nan")) + det(3, conf=float("-inf")) + det(4))
    view = StationView("s", lambda: {"state": "running"}, LiveFeed(None), events_path=path)

    async def main() -> requests.Response:
        server = WebServer(CollectorRegistry(), "127.0.0.1", 0, lambda: (True, "ok"),
                           console=Console([view]))
        await server.start()
        try:
            return await asyncio.to_thread(requests.get, f"{server.url}/api/detections",
                                           timeout=10)
        finally:
            await server.stop()

    r = asyncio.run(main())
    assert r.status_code == 200, r.text
    assert [d["id"] for d in r.json()["detections"]] == [ident(4), ident(1)]
    tail = JsonlTail(path)
    tail.read_new()
    assert tail.bad_lines == 2


def test_tail_skips_an_oversized_line_without_buffering_it(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    tail = JsonlTail(path)
    append(path, det(1) + b'{"pad": "' + b"x" * (MAX_LINE + 10))
    assert [x.doc["id"] for x in tail.read_new()[1]] == [ident(1)]
    append(path, b"x" * 1000 + b'"}\n' + det(2))
    assert [x.doc["id"] for x in tail.read_new()[1]] == [ident(2)]
    assert tail.bad_lines == 1 and tail.offset == path.stat().st_size


def test_a_large_file_is_read_a_batch_at_a_time(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "BATCH_BYTES", 2000)
    monkeypatch.setattr(index_module, "MAX_LINE", 1000)  # reads of 1000 bytes
    path = tmp_path / "events.jsonl"
    append(path, b"".join(det(n) for n in range(50)))
    tail = JsonlTail(path)
    _, lines = tail.read_new()
    assert 0 < len(lines) < 50 and tail.behind
    assert len(DetectionIndex(path, None)) == 50  # the index reads on until caught up


def test_a_large_reviews_file_is_read_to_its_end_on_the_first_request(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "BATCH_BYTES", 2000)
    monkeypatch.setattr(index_module, "MAX_LINE", 1000)
    path, reviews = tmp_path / "events.jsonl", tmp_path / "events.reviews.jsonl"
    append(path, det(1) + det(2))
    # Many earlier reviews (of other detections), the two that matter last.
    append(reviews, b"".join(review(n, "no") for n in range(100, 150)) + review(1) + review(2))
    index = DetectionIndex(path, reviews)
    assert [i for _, i in index.matching(reviewed="yes")] == [ident(2), ident(1)]
    assert [d["id"] for d, _ in DetectionIndex(path, reviews).reviewed_records()] \
        == [ident(1), ident(2)]


def test_index_deduplicates_by_id_latest_record_wins(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    append(path, det(1, conf=60.0) + det(2) + det(1, conf=95.0))  # a restart re-scored 1
    index = DetectionIndex(path, tmp_path / "reviews.jsonl")
    assert len(index) == 2 and index.get(ident(1)).confidence == 95.0  # type: ignore[union-attr]
    # A later record with another timestamp moves the detection in the order.
    append(path, det(1, day=2))
    assert index.matching() == [("2026-11-02T00:00:01.000Z", ident(1)),
                                ("2026-11-01T00:00:02.000Z", ident(2))]
    assert len(index) == 2


def test_index_does_not_reread_what_it_has_read(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    append(path, det(1) + det(2))
    index = DetectionIndex(path, None)
    assert len(index) == 2
    # Blank the first line in place (same file, same size): an index that
    # re-read the file would lose it; one that reads new bytes keeps it.
    with open(path, "r+b") as fh:
        fh.write(b" " * (len(det(1)) - 1))
    append(path, det(3))
    assert [i for _, i in index.matching()] == [ident(3), ident(2), ident(1)]


def test_index_follows_rotation_truncation_and_deletion(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    reviews = tmp_path / "events.reviews.jsonl"
    append(path, det(1) + det(2))
    append(reviews, review(1))
    index = DetectionIndex(path, reviews)
    assert len(index) == 2 and index.review(ident(1)) is not None
    os.replace(path, tmp_path / "events.jsonl.1")  # logrotate: move, then a new file
    append(path, det(3))
    assert [i for _, i in index.matching()] == [ident(3)]
    with open(path, "wb") as fh:  # truncated in place (copytruncate), then written again
        fh.write(det(4))
    assert [i for _, i in index.matching()] == [ident(4)]
    path.unlink()
    reviews.unlink()
    assert index.matching() == [] and index.review(ident(1)) is None
    append(path, det(5))
    assert [i for _, i in index.matching()] == [ident(5)]


def test_index_filters_and_pages_newest_first(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    append(a, b"".join(det(n, day=1 + n % 2) for n in range(0, 40, 2)))
    append(b, b"".join(det(n, day=1 + n % 2) for n in range(1, 40, 2)))
    append(tmp_path / "a.reviews.jsonl", review(0) + review(2, "no"))
    ia, ib = DetectionIndex(a, tmp_path / "a.reviews.jsonl"), DetectionIndex(b, None)
    assert ia.count_on("2026-11-01") == 20 and ib.count_on("2026-11-01") == 0
    assert [i for _, i in ia.matching(reviewed="yes")] == [ident(2), ident(0)]
    assert len(ia.matching(reviewed="no")) == 18
    assert ib.matching(date="2026-11-01") == [] and len(ib.matching(date="2026-11-02")) == 20
    keys = {"a": ia.matching(), "b": ib.matching()}
    pages = [newest_first(keys, off, 15) for off in (0, 15, 30)]
    assert [len(p) for p in pages] == [15, 15, 10]
    flat = [x for p in pages for x in p]
    # b's detections are all on the 2nd, so they come first, then a's, each newest first.
    assert flat[:20] == [("b", ident(n)) for n in range(39, 0, -2)]
    assert flat[20:] == [("a", ident(n)) for n in range(38, -1, -2)]
    records = ia.reviewed_records()
    assert [(d["id"], r["SRKWFound"]) for d, r in records] == [(ident(0), "yes"), (ident(2), "no")]
    assert records[0][0]["location"] == {"id": "s"}  # the full record, read back


@pytest.mark.slow
def test_a_page_of_100000_events_answers_in_under_200_ms(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with open(path, "wb") as fh:
        for chunk in range(0, 100_000, 10_000):
            fh.write(b"".join(det(n, day=1 + n // 86400) for n in range(chunk, chunk + 10_000)))
    view = StationView("s", lambda: {"state": "running"}, LiveFeed(None), events_path=path)
    timings: dict[str, list[float]] = {}

    async def main() -> None:
        server = WebServer(CollectorRegistry(), "127.0.0.1", 0, lambda: (True, "ok"),
                           console=Console([view]))
        await server.start()
        try:
            def get(query: str) -> dict[str, Any]:
                r = requests.get(f"{server.url}/api/detections?{query}", timeout=30)
                assert r.status_code == 200
                return r.json()  # type: ignore[no-any-return]

            t0 = time.perf_counter()
            first = await asyncio.to_thread(get, "limit=50")
            timings["build"] = [time.perf_counter() - t0]
            assert first["total"] == 100_000
            append(path, det(100_000, day=3))  # a new event: read as written
            for query in ("limit=50", "limit=50&offset=60000", "reviewed=no&limit=50",
                          "date=2026-11-01&limit=50&offset=100"):
                laps = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    doc = await asyncio.to_thread(get, query)
                    laps.append(time.perf_counter() - t0)
                    assert len(doc["detections"]) == 50
                timings[query] = laps
            assert (await asyncio.to_thread(get, "limit=1"))["detections"][0]["id"] \
                == ident(100_000)
        finally:
            await server.stop()

    asyncio.run(main())
    medians = {q: round(statistics.median(t) * 1000, 1) for q, t in timings.items()}
    print("ms (median of 5; build: first request):", medians)
    for query, ms in medians.items():
        if query != "build":
            assert ms < 200, medians
