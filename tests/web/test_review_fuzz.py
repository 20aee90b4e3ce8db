"""Property tests (Hypothesis) for the review API through a real server on 127.0.0.1.

Generated JSON bodies, field values, raw bytes and event ids are posted with
a valid CSRF token; the only outcomes allowed are a 2xx or a 4xx with a
one-line message, never a 5xx or a traceback. The server runs in its own
thread and event loop for the whole module.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from support.console_support import make_view

from listener.web.console import Console
from listener.web.server import WebServer

settings.register_profile(
    "review-api", database=None, deadline=None, max_examples=200,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PROFILE = settings.get_profile("review-api")
SEEN: dict[int, int] = {}


class Served:
    def __init__(self, url: str, csrf: str, ids: list[str], reviews: Path) -> None:
        self.url, self.csrf, self.ids, self.reviews = url, csrf, ids, reviews


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("fuzz")
    loop = asyncio.new_event_loop()
    view = make_view(folder)
    server = WebServer(CollectorRegistry(), "127.0.0.1", 0, lambda: (True, "ok"),
                       console=Console([view]))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    ids = [d["id"] for d in requests.get(server.url + "/api/detections", timeout=5)
           .json()["detections"]]
    csrf = requests.get(server.url + "/api/session", timeout=5).json()["csrf"]
    assert view.reviews_path is not None
    try:
        yield Served(server.url, csrf, ids, view.reviews_path)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    print(f"review API fuzz: {sum(SEEN.values())} requests, by status {dict(sorted(SEEN.items()))}")


TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=60)
VALUE = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(TEXT, inner, max_size=4), max_leaves=8)
FIELDS = st.fixed_dictionaries({}, optional={
    "SRKWFound": st.sampled_from(["yes", "no", "don't know"]) | VALUE,
    "tags": st.lists(TEXT, max_size=5) | TEXT | VALUE,
    "comments": TEXT | st.text(max_size=3000) | VALUE,
    "moderator": TEXT | VALUE,
}).flatmap(lambda d: st.dictionaries(TEXT, VALUE, max_size=3).map(lambda extra: {**extra, **d}))


def check(r: requests.Response) -> None:
    SEEN[r.status_code] = SEEN.get(r.status_code, 0) + 1
    assert 200 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert "Traceback" not in r.text and r.text.strip(), r.text[:300]
    if r.status_code >= 400:
        assert r.text.endswith("\n") and "\n" not in r.text[:-1], r.text[:300]
        assert "got None" not in r.text and "\\x" not in r.text, r.text[:300]


@PROFILE
@given(doc=FIELDS, which=st.integers(0, 1))
def test_generated_review_documents(served: Served, doc: dict[str, Any], which: int) -> None:
    url = f"{served.url}/api/detections/{served.ids[which]}/review"
    body = json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")
    r = requests.post(url, data=body, timeout=10, headers={
        "X-CSRF-Token": served.csrf, "Content-Type": "application/json"})
    check(r)


@settings(PROFILE, max_examples=120)
@given(body=st.binary(max_size=2000) | TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
       event_id=st.text(max_size=80) | st.sampled_from(["0" * 8, "ab-cd-ef-01"]),
       content_type=st.sampled_from(["application/json", "text/plain", "application/json; "
                                     "charset=latin-1", ""]))
def test_generated_bytes_ids_and_types(served: Served, body: bytes, event_id: str,
                                       content_type: str) -> None:
    url = f"{served.url}/api/detections/{quote(event_id, safe='')}/review"
    r = requests.post(url, data=body, timeout=10, headers={
        "X-CSRF-Token": served.csrf, "Content-Type": content_type})
    check(r)
