"""The event sinks against real files and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from prometheus_client import CollectorRegistry
from support.trickle import TrickleEndpoint

from listener.audio.history import AudioHistory
from listener.config import (
    ClipSinkConfig,
    DetectionConfig,
    JsonlSinkConfig,
    OrcaHelloSinkConfig,
    OutputsConfig,
    StationConfig,
    WebhookSinkConfig,
)
from listener.detection.rule import ClipResult, WindowScore, decide_clip
from listener.errors import SinkError
from listener.events.axes import margins
from listener.events.png import PNG_SIGNATURE, write_png
from listener.events.records import Event, clip_file_names, event_json, make_detection_event
from listener.events.sinks import (
    ClipSink,
    JsonlSink,
    LogSink,
    OrcaHelloSink,
    WebhookSink,
    build_sinks,
    emit_all,
)
from listener.events.sinks.clips import spectrogram_image
from listener.events.sinks.jsonl import read_records
from listener.metrics import Metrics

CFG = DetectionConfig()
STATION = StationConfig(id="rpi_bush_point", name="Bush Point",
                        longitude=-122.6040035, latitude=48.0336664)
MODEL = {"id": "orcahello-srkw", "architecture": "resnet50", "sha256": "cd" * 32}
T0 = datetime(2024, 7, 1, 12, 0, 0, tzinfo=UTC)


def make_event(n: int = 0, start_s: float = 0.0) -> Event:
    """The ``n``-th minute's detection (windows 10..13 hot: seconds 11..13 positive)."""
    start = start_s + 60.0 * n
    utc = T0 + timedelta(seconds=start)
    windows = [WindowScore(start + i, start + i + 2.0, 0.9 if 10 <= i < 14 else 0.1,
                           utc + timedelta(seconds=i)) for i in range(59)]
    clip: ClipResult = decide_clip(windows, start, start + 60.0, CFG)
    return make_detection_event(clip, station=STATION, model=MODEL, detection=CFG,
                                stream_key="rpi_bush_point/hls/1719835200")


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


# --- jsonl ---------------------------------------------------------------------

def test_jsonl_appends_and_survives_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "events.jsonl"
    events = [make_event(i) for i in range(3)]

    async def run(sink: JsonlSink, evs: list[Event]) -> None:
        for ev in evs:
            await sink.emit(ev)
        await sink.close(1.0)

    asyncio.run(run(JsonlSink(JsonlSinkConfig(path=path)), events[:2]))
    before = path.read_bytes()
    with open(path, "ab") as fh:  # a crash in the middle of a write
        fh.write(b'{"id": "torn-rec')
    asyncio.run(run(JsonlSink(JsonlSinkConfig(path=path)), events[2:]))
    raw = path.read_bytes()
    assert raw.startswith(before)  # never rewritten
    assert raw.count(b"\n") == 4 and raw.endswith(b"\n")
    records = list(read_records(path))
    assert [r["id"] for r in records] == [e.id for e in events]
    assert records[0] == json.loads(json.dumps(event_json(events[0])))


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


# --- orcahello -----------------------------------------------------------------

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


def test_orcahello_sink_writes_one_record_per_detection(tmp_path: Path) -> None:
    cfg = OrcaHelloSinkConfig(dir=tmp_path / "oh", audio_base_uri="https://x.example/a/",
                              image_base_uri="https://x.example/i")
    event = make_event()
    asyncio.run(OrcaHelloSink(cfg, audio_format="wav").emit(event))
    (path,) = (tmp_path / "oh").iterdir()
    assert path.name == f"{event.id}.json"
    doc = json.loads(path.read_text())
    audio, image = clip_file_names(event, "wav", clip_only=True)
    assert doc["audioUri"] == f"https://x.example/a/{audio}"
    assert doc["imageUri"] == f"https://x.example/i/{image}"
    assert doc["timestamp"] == "2024-07-01T12:00:00.000Z"
    assert doc["source_guid"] == "rpi_bush_point" and doc["reviewed"] is False
    assert [p["startTime"] for p in doc["predictions"]] == [11.0, 12.0, 13.0]


# --- clips ---------------------------------------------------------------------

def read_png(path: Path) -> tuple[int, int, np.ndarray]:
    """Decode our own 8-bit RGB, filter-0 PNG: ``(width, height, pixels)``."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    pos = 8
    chunks: dict[bytes, bytes] = {}
    order: list[bytes] = []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        order.append(kind)
        pos += 12 + length
    assert order[0] == b"IHDR" and order[-1] == b"IEND"
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour) == (8, 2)
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, -1)
    assert (rows[:, 0] == 0).all()
    return width, height, rows[:, 1:].reshape(height, width, 3)


def test_clip_sink_writes_flac_with_context_and_a_png(tmp_path: Path) -> None:
    sr = 8000
    history = AudioHistory(max_s=120)
    t = np.arange(100 * sr) / sr
    audio = (0.3 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)  # 1 kHz tone
    cfg = ClipSinkConfig(dir=tmp_path / "clips", format="flac", before_s=5, after_s=3)
    event = make_event(0, start_s=10.0)  # clip 10..70 s -> file 5..73 s
    written: list[int] = []

    async def main() -> None:
        for i in range(0, 71 * sr, sr):  # the "after" context is not there yet
            history.append(i / sr, audio[i:i + sr], sr, event.stream_key)
        sink = ClipSink(cfg, history, on_written=lambda: written.append(1))
        await sink.emit(event)
        await asyncio.sleep(0.01)
        assert written == []
        for i in range(71 * sr, 80 * sr, sr):
            history.append(i / sr, audio[i:i + sr], sr, event.stream_key)
        await sink.close(5.0)

    asyncio.run(main())
    assert written == [1]
    audio_name, image_name = clip_file_names(event, "flac")
    samples, rate = sf.read(tmp_path / "clips" / audio_name, dtype="float32")
    assert rate == sr and samples.shape == (68 * sr,)
    np.testing.assert_allclose(samples, audio[5 * sr:73 * sr], atol=1e-4)
    framed_width, framed_height, framed = read_png(tmp_path / "clips" / image_name)
    # The picture inside its time and frequency scales (tests/events/test_axes.py).
    top, left, bottom, right = margins(4)
    assert (framed_width, framed_height) == (framed.shape[1], framed.shape[0])
    pixels = framed[top:framed_height - bottom, left:framed_width - right]
    height, width = pixels.shape[:2]
    # 8 kHz: n_fft 1024 (one bin per row up to 4 kHz), hop 512 -> one column per frame.
    assert (width, height) == (1 + (68 * sr - 1024) // 512, 400)
    np.testing.assert_array_equal(pixels, spectrogram_image(audio[5 * sr:73 * sr], sr))
    # 0..4 kHz bottom to top: the 1 kHz tone is the brightest row, a quarter up.
    brightest = int(np.argmax(pixels.astype(int).sum(axis=(1, 2))))
    assert abs(brightest - 300) <= 2
    assert tuple(pixels[0, 0]) == (68, 1, 84)  # quiet top row: the colormap's dark end
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == sorted(
        [audio_name, image_name])  # no temporary files left


def _record_and_its_files(tmp_path: Path, history_from_s: float,
                          caplog: pytest.LogCaptureFixture) -> tuple[dict[str, Any], np.ndarray,
                                                                      int, Path]:
    """Clip 60..120 s with a tone at clip seconds 11..14, through the sinks
    ``build_sinks`` makes for ``orcahello`` + ``clips`` (default 10 s context),
    the history holding audio from ``history_from_s``: the record, the audio
    it names, its rate and the image it names."""
    sr = 8000
    audio = np.zeros(200 * sr, dtype=np.float32)
    t = np.arange(3 * sr) / sr
    audio[71 * sr:74 * sr] = 0.5 * np.sin(2 * np.pi * 1000.0 * t)
    event = make_event(0, start_s=60.0)  # seconds 11..13 positive
    history = AudioHistory(max_s=300)
    first = int(history_from_s * sr)
    history.append(history_from_s, audio[first:], sr, event.stream_key)
    outputs = OutputsConfig(orcahello=OrcaHelloSinkConfig(dir=tmp_path / "oh"),
                            clips=ClipSinkConfig(dir=tmp_path / "clips", format="wav"), log=False)

    async def main() -> None:
        sinks = build_sinks(outputs, STATION, history)
        await emit_all(sinks, event)
        for sink in sinks:
            await sink.close(10.0)

    with caplog.at_level(logging.INFO, logger="listener.events.sinks.clips"):
        asyncio.run(main())
    record = json.loads((tmp_path / "oh" / f"{event.id}.json").read_text())
    samples, rate = sf.read(tmp_path / "clips" / record["audioUri"], dtype="float32")
    return record, samples, rate, tmp_path / "clips" / record["imageUri"]


@pytest.mark.parametrize("history_from_s", [0.0, 65.0])
def test_orcahello_record_predictions_fall_where_its_audio_has_the_call(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, history_from_s: float) -> None:
    record, samples, sr, image = _record_and_its_files(tmp_path, history_from_s, caplog)
    # The portal plays startTime s into audioUri and marks startTime / 61 of imageUri.
    assert samples.shape == (60 * sr,)  # time 0 = clip start, spanning the clip
    loud = np.flatnonzero(np.abs(samples) > 0.1)
    assert record["predictions"][0]["startTime"] == 11.0
    assert abs(loud[0] / sr - 11.0) < 0.01 and abs(loud[-1] / sr - 14.0) < 0.01
    width, _, _ = read_png(image)
    _, left, _, right = margins(4)
    assert width - left - right == 1 + (60 * sr - 1024) // 512  # the picture spans the clip
    assert (tmp_path / "clips" / clip_file_names(
        make_event(0, start_s=60.0), "wav")[0]).exists()  # the file with context as before
    filled = [r.getMessage() for r in caplog.records if "filled with silence" in r.getMessage()]
    if history_from_s > 60.0:  # the history lacks the clip's first 5 s: silence, logged
        assert not samples[:5 * sr].any() and len(filled) == 1 and "5.00 s" in filled[0]
    else:
        assert filled == []


def test_clip_sink_without_audio_counts_a_failure(tmp_path: Path) -> None:
    failures: list[int] = []
    cfg = ClipSinkConfig(dir=tmp_path / "clips", before_s=0, after_s=0)

    async def main() -> None:
        sink = ClipSink(cfg, AudioHistory(10), on_failure=lambda: failures.append(1),
                        wait_extra_s=0.05)
        await sink.emit(make_event())
        await sink.close(2.0)

    asyncio.run(main())
    assert failures == [1] and not (tmp_path / "clips").exists()


# --- log, build_sinks, emit_all --------------------------------------------------

def test_log_sink_line(caplog: pytest.LogCaptureFixture) -> None:
    event = make_event()
    with caplog.at_level(logging.INFO, logger="listener.events.sinks.log"):
        asyncio.run(LogSink().emit(event))
    (rec,) = caplog.records
    msg = rec.getMessage()
    assert msg.startswith("rpi_bush_point detection utc=2024-07-01T12:00:00.000Z")
    assert "confidence=90.0" in msg and "positive_s=[11,12,13]" in msg
    assert rec.station == "rpi_bush_point"  # type: ignore[attr-defined]


def test_build_sinks_and_emit_all_count_failures(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, "rpi_bush_point")
    outputs = OutputsConfig(jsonl=JsonlSinkConfig(path=tmp_path),  # a folder: cannot append
                            orcahello=OrcaHelloSinkConfig(dir=tmp_path / "oh"), log=True)
    sinks = build_sinks(outputs, STATION, None, metrics.sink_metrics)
    assert [s.name for s in sinks] == ["jsonl", "orcahello", "log"]

    def value(name: str, sink: str) -> float | None:
        return registry.get_sample_value(name, {"station": "rpi_bush_point", "sink": sink})

    with caplog.at_level(logging.WARNING, logger="listener.events.sinks.base"):
        failed = asyncio.run(emit_all(sinks, make_event(), metrics.sink_metrics))
    assert failed == 1
    assert "sink jsonl failed" in caplog.text
    assert value("listener_sink_failures_total", "jsonl") == 1
    assert value("listener_sink_deliveries_total", "orcahello") == 1
    assert value("listener_sink_deliveries_total", "log") == 1
    with pytest.raises(SinkError, match="outbox_dir"):
        build_sinks(OutputsConfig(webhook=WebhookSinkConfig(url="http://127.0.0.1:9/")),
                    STATION, None)
    with pytest.raises(SinkError, match="history"):
        build_sinks(OutputsConfig(clips=ClipSinkConfig(dir=tmp_path)), STATION, None)


def test_png_round_trip_and_spectrogram_size_bounds(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(3, 5, 3), dtype=np.uint8)
    write_png(tmp_path / "x.png", rgb)
    width, height, pixels = read_png(tmp_path / "x.png")
    assert (width, height) == (5, 3)
    np.testing.assert_array_equal(pixels, rgb)
    long_48k = rng.standard_normal(80 * 48000).astype(np.float32)
    assert spectrogram_image(long_48k, 48000).shape == (400, 1200, 3)
    assert spectrogram_image(np.zeros(10, np.float32), 48000).max() <= 84  # silence: dark


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
