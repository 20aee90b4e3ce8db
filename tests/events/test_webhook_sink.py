"""The webhook sink against a real loopback endpoint: delivery, retries, its outbox."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support.sink_events import make_event
from support.trickle import TrickleEndpoint

from listener.config import WebhookSinkConfig
from listener.errors import SinkError
from listener.events.records import event_json
from listener.events.sinks import WebhookSink

# --- a loopback webhook endpoint ---------------------------------------------

class Endpoint:
    """Records POSTs; answers ``script`` statuses first, then 200; can go down."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.requests: list[dict[str, Any]] = []
        self.script: list[int] = []
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def up(self) -> None:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with endpoint._lock:
                    status = endpoint.script.pop(0) if endpoint.script else 200
                    endpoint.requests.append({"headers": dict(self.headers), "body": body,
                                              "status": status, "path": self.path})
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def first_successes(self) -> list[str]:
        """Idempotency keys in order of their first 2xx answer."""
        seen: list[str] = []
        for r in self.requests:
            key = r["headers"]["Idempotency-Key"]
            if 200 <= r["status"] < 300 and key not in seen:
                seen.append(key)
        return seen


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    ep = Endpoint()
    yield ep
    ep.down()


def hook_cfg(url: str, **kw: Any) -> WebhookSinkConfig:
    return WebhookSinkConfig(url=url, timeout_s=2.0, backoff_initial_s=0.01,
                             backoff_max_s=0.05, **kw)


def outbox_files(outbox: Path) -> list[str]:
    return sorted(p.name for p in outbox.iterdir() if p.is_file())


# --- webhook -------------------------------------------------------------------

def test_webhook_posts_with_idempotency_key_and_bearer_token(
        tmp_path: Path, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTENER_TEST_TOKEN", "s3cret\n")
    endpoint.up()
    depths: list[int] = []
    event = make_event()

    async def main() -> None:
        sink = WebhookSink(hook_cfg(endpoint.url, token_env="LISTENER_TEST_TOKEN"),
                           tmp_path / "outbox", on_depth=depths.append)
        await sink.start()
        await sink.emit(event)
        await sink.emit(event)  # a repeat while pending is not queued twice
        await sink.close(3.0)

    asyncio.run(main())
    (req,) = endpoint.requests
    assert req["headers"]["Idempotency-Key"] == event.id
    assert req["headers"]["Authorization"] == "Bearer s3cret"
    assert req["headers"]["Content-Type"] == "application/json"
    assert json.loads(req["body"]) == json.loads(json.dumps(event_json(event)))
    assert outbox_files(tmp_path / "outbox") == []
    assert depths[-1] == 0 and max(depths) == 1


def test_webhook_token_from_file_and_missing_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("filetoken\n")
    sink = WebhookSink(hook_cfg("http://127.0.0.1:9/", token_file=token_file), tmp_path)
    assert sink._token == "filetoken"
    with pytest.raises(SinkError, match="NOT_SET_ANYWHERE"):
        WebhookSink(hook_cfg("http://127.0.0.1:9/", token_env="NOT_SET_ANYWHERE"), tmp_path)


def test_dead_endpoint_that_comes_back_gets_everything_in_order(
        tmp_path: Path, endpoint: Endpoint) -> None:
    events = [make_event(i) for i in range(5)]
    failures: list[int] = []

    async def main() -> None:
        sink = WebhookSink(hook_cfg(endpoint.url), tmp_path / "outbox",
                           on_failure=lambda: failures.append(1))
        await sink.start()
        for ev in events[:3]:
            await sink.emit(ev)
        await asyncio.sleep(0.15)  # connection refused, several retries
        assert sink.depth == 3
        endpoint.script = [503, 429, 500]  # comes back unhealthy at first
        endpoint.up()
        for ev in events[3:]:
            await sink.emit(ev)
        await sink.close(5.0)

    asyncio.run(main())
    assert endpoint.first_successes() == [e.id for e in events]
    assert {r["headers"]["Idempotency-Key"] for r in endpoint.requests} == {e.id for e in events}
    assert len(failures) >= 4  # refused attempts plus the three error answers
    assert outbox_files(tmp_path / "outbox") == []


def test_pending_events_are_redelivered_after_a_restart(
        tmp_path: Path, endpoint: Endpoint) -> None:
    outbox = tmp_path / "outbox"
    old, new = [make_event(i) for i in range(3)], make_event(3)

    async def first_run() -> None:
        sink = WebhookSink(hook_cfg(endpoint.url), outbox)
        await sink.start()
        for ev in old:
            await sink.emit(ev)
        await sink.close(0.1)  # endpoint down: gives up, files stay

    async def second_run() -> None:
        sink = WebhookSink(hook_cfg(endpoint.url), outbox)
        await sink.start()
        assert sink.depth == 3
        await sink.emit(new)
        endpoint.up()
        await sink.close(5.0)

    asyncio.run(first_run())
    names = outbox_files(outbox)
    assert [n.split("-", 1)[1] for n in names] == [f"{e.id}.json" for e in old]
    assert [n[:12] for n in names] == ["000000000000", "000000000001", "000000000002"]
    assert endpoint.requests == []
    (outbox / ".000000000003-torn.json.tmp").write_bytes(b'{"id": "to')  # crash mid-write
    asyncio.run(second_run())
    assert endpoint.first_successes() == [e.id for e in [*old, new]]
    assert outbox_files(outbox) == []


def test_a_400_goes_to_dead_letters_and_the_queue_moves_on(
        tmp_path: Path, endpoint: Endpoint) -> None:
    endpoint.script = [400]
    endpoint.up()
    events = [make_event(0), make_event(1)]

    async def main() -> None:
        sink = WebhookSink(hook_cfg(endpoint.url), tmp_path / "outbox")
        for ev in events:
            await sink.emit(ev)  # starts the sink lazily
        await sink.close(3.0)

    asyncio.run(main())
    dead = tmp_path / "outbox" / "dead"
    assert [n.split("-", 1)[1] for n in outbox_files(dead)] == [f"{events[0].id}.json"]
    assert json.loads((dead / outbox_files(dead)[0]).read_text())["id"] == events[0].id
    assert endpoint.first_successes() == [events[1].id]
    assert outbox_files(tmp_path / "outbox") == []


@pytest.mark.parametrize(("where", "status"), [("body", 200), ("body", 503),
                                               ("headers", 200)])
def test_a_trickling_endpoint_is_cut_off_and_never_holds_the_exit(
        tmp_path: Path, where: str, status: int, caplog: pytest.LogCaptureFixture) -> None:
    """requests' timeout bounds each read: the POST as a whole must be bounded too,
    an error body read only a little of, and no thread left to hold asyncio.run()."""
    endpoint = TrickleEndpoint(where, status)
    seen: dict[str, float] = {}

    async def main() -> None:
        cfg = WebhookSinkConfig(url=endpoint.url, timeout_s=0.5, backoff_initial_s=0.01,
                                backoff_max_s=0.05)
        sink = WebhookSink(cfg, tmp_path / "outbox")
        await sink.start()
        await sink.emit(make_event())
        started = time.monotonic()
        while sink.depth and time.monotonic() - started < 4.0:
            await asyncio.sleep(0.05)
        seen["depth"], seen["posts"] = sink.depth, endpoint.posts
        await sink.close(0.1)
        seen["closed"] = time.monotonic()

    asyncio.run(main())
    assert time.monotonic() - seen["closed"] < 1.0  # no POST thread joined at exit
    endpoint.sock.close()
    if where == "body" and status == 200:
        assert seen["depth"] == 0 and seen["posts"] == 1  # the status acknowledges
    else:
        assert seen["depth"] == 1 and seen["posts"] >= 2  # cut off, retried
        retried = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
        assert retried
        if status == 503:
            assert "HTTP 503 'xx" in retried[0]


# --- the outbox ----------------------------------------------------------------

def test_outbox_counter_at_its_limit_is_renumbered_not_overflowed(
        tmp_path: Path, endpoint: Endpoint, caplog: pytest.LogCaptureFixture) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    old, new = make_event(0), make_event(1)
    (outbox / f"999999999999-{old.id}.json").write_text(json.dumps({"id": old.id}))

    async def main() -> None:
        sink = WebhookSink(hook_cfg(endpoint.url), outbox)
        await sink.start()
        await sink.emit(new)
        assert outbox_files(outbox) == [f"000000000000-{old.id}.json",
                                        f"000000000001-{new.id}.json"]
        endpoint.up()
        await sink.close(5.0)

    with caplog.at_level(logging.WARNING, logger="listener"):
        asyncio.run(main())
    assert endpoint.first_successes() == [old.id, new.id]
    assert any("renumbering" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("body", [b"\x00\xffnot json", b'{"id": "another event"}', b"[1]",
                                  b" " * (4 * 1024 * 1024 + 1)])
def test_corrupted_outbox_entries_are_dead_lettered_never_posted(
        tmp_path: Path, endpoint: Endpoint, body: bytes,
        caplog: pytest.LogCaptureFixture) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    good = make_event(2)
    (outbox / "000000000000-corrupt.json").write_bytes(body)
    (outbox / f"000000000001-{good.id}.json").write_text(json.dumps({"id": good.id}))
    endpoint.up()

    async def main() -> None:
        sink = WebhookSink(hook_cfg(endpoint.url), outbox)
        await sink.start()
        await sink.close(5.0)

    with caplog.at_level(logging.ERROR, logger="listener"):
        asyncio.run(main())
    assert endpoint.first_successes() == [good.id]
    assert (outbox / "dead" / "000000000000-corrupt.json").read_bytes() == body
    assert any("000000000000-corrupt.json" in r.getMessage() for r in caplog.records)


def test_outbox_symlinks_are_never_posted(tmp_path: Path, endpoint: Endpoint,
                                          caplog: pytest.LogCaptureFixture) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:x:0:0")
    link = outbox / "000000000000-stolen.json"
    link.symlink_to(secret)
    endpoint.up()

    async def main() -> None:
        sink = WebhookSink(hook_cfg(endpoint.url), outbox)
        await sink.start()
        assert sink.depth == 0
        await sink.emit(make_event(5))
        # A link swapped in after the scan is refused when it is read.
        pending = sink._pending[0]
        pending.unlink()
        pending.symlink_to(secret)
        await sink.close(2.0)

    with caplog.at_level(logging.WARNING, logger="listener"):
        asyncio.run(main())
    assert all(b"root:x" not in r["body"] for r in endpoint.requests)
    assert endpoint.requests == []
    messages = [r.getMessage() for r in caplog.records]
    assert any("symbolic link" in m and str(link) in m for m in messages)
    assert any("rejected permanently" in m and "unreadable outbox file" in m for m in messages)
