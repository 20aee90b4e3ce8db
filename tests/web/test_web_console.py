"""The console's HTTP API against a real server on 127.0.0.1 over real files."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry
from support.console_support import feed_live, make_view

from listener.web.console import Console
from listener.web.security import load_token
from listener.web.server import WebServer
from listener.web.views import StationView

Test = Callable[[WebServer, StationView], Awaitable[None]]


def run_console(tmp_path: Path, test: Test, host: str = "127.0.0.1",
                token: str | None = None, live: bool = False) -> None:
    async def main() -> None:
        view = make_view(tmp_path)
        console = Console([view], bind_host=host, token=token, tick_s=0.2)
        server = WebServer(CollectorRegistry(), host, 0, lambda: (True, "ok"), console=console)
        await server.start()
        feeder = asyncio.create_task(feed_live(view, 8.0, pace=8.0)) if live else None
        try:
            await test(server, view)
        finally:
            if feeder is not None:
                feeder.cancel()
            await server.stop()

    asyncio.run(main())


async def call(method: str, url: str, **kw: Any) -> requests.Response:
    return await asyncio.to_thread(requests.request, method, url, timeout=5, **kw)


def test_pages_and_static_files_are_served_with_their_types(tmp_path: Path) -> None:
    async def test(server: WebServer, view: StationView) -> None:
        for path in ("/", "/live", "/detections"):
            r = await call("GET", server.url + path)
            assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
            assert "/static/app.js" in r.text
        r = await call("GET", server.url + "/static/app.js")
        assert r.headers["Content-Type"].startswith("text/javascript")
        for bad in ("/static/../console.py", "/static/%2e%2e%2fconsole.py", "/static/nope.js"):
            assert (await call("GET", server.url + bad)).status_code == 404

    run_console(tmp_path, test)


def test_detections_list_clip_ranges_and_traversal(tmp_path: Path) -> None:
    async def test(server: WebServer, view: StationView) -> None:
        r = await call("GET", server.url + "/api/detections")
        dets = r.json()["detections"]
        assert len(dets) == 2 and dets[0]["timestamp"] > dets[1]["timestamp"]  # newest first
        det = dets[0]
        assert det["audio"].endswith(".flac") and det["image"].endswith(".png")
        assert det["confidence"] > 50 and det["model"] == "orcahello-srkw"
        r = await call("GET", server.url + det["audio"], headers={"Range": "bytes=0-99"})
        assert r.status_code == 206 and len(r.content) == 100
        assert r.headers["Content-Type"] == "audio/flac" and r.content[:4] == b"fLaC"
        r = await call("GET", server.url + det["image"])
        assert r.headers["Content-Type"] == "image/png" and r.content[:4] == b"\x89PNG"
        (view.clips_dir.parent / "secret.png").write_bytes(b"x")  # type: ignore[union-attr]
        for bad in ("..%2Fsecret.png", "%2e%2e%2fsecret.png", ".hidden.png", "a.py"):
            r = await call("GET", f"{server.url}/clips/{view.station_id}/{bad}")
            assert r.status_code == 404, bad
        r = await call("GET", server.url + "/api/detections?date=2026-11-30")
        assert r.json()["detections"] == []
        r = await call("GET", server.url + "/api/detections?date=yesterday")
        assert r.status_code == 400 and "date" in r.text

    run_console(tmp_path, test)


async def session(server: WebServer) -> dict[str, Any]:
    return (await call("GET", server.url + "/api/session")).json()  # type: ignore[no-any-return]


def test_review_is_appended_and_exported_as_orcahello_records(tmp_path: Path) -> None:
    async def test(server: WebServer, view: StationView) -> None:
        det = (await call("GET", server.url + "/api/detections")).json()["detections"][1]
        url = f"{server.url}/api/detections/{det['id']}/review"
        body = {"SRKWFound": "yes", "tags": "S1;call", "comments": "clear call",
                "moderator": "ana"}
        r = await call("POST", url, json=body)
        assert r.status_code == 403 and "CSRF" in r.text  # no token header
        csrf = {"X-CSRF-Token": (await session(server))["csrf"]}
        r = await call("POST", url, json={**body, "SRKWFound": "maybe"}, headers=csrf)
        assert r.status_code == 400 and "SRKWFound" in r.text
        r = await call("POST", url, json=body, headers={**csrf, "Origin": "http://evil.example"})
        assert r.status_code == 403
        r = await call("POST", url, json=body, headers={**csrf, "Host": "evil.example"})
        assert r.status_code == 403  # DNS rebinding
        r = await call("POST", url, json=body, headers=csrf)
        assert r.status_code == 201
        r = await call("POST", url, json={**body, "SRKWFound": "no"}, headers=csrf)
        assert r.status_code == 201  # changed their mind: the later line wins
        lines = view.reviews_path.read_text().splitlines()  # type: ignore[union-attr]
        assert [json.loads(x)["SRKWFound"] for x in lines] == ["yes", "no"]
        r = await call("GET", server.url + "/api/detections?reviewed=yes")
        [reviewed] = r.json()["detections"]
        assert reviewed["review"]["SRKWFound"] == "no"
        export = (await call("GET", server.url + "/api/reviews/export")).json()
        [rec] = export
        assert rec["id"] == det["id"] and rec["SRKWFound"] == "no" and rec["reviewed"] is True
        assert rec["tags"] == "S1;call" and rec["moderator"] == "ana"
        assert rec["dateModerated"].endswith("Z") and rec["location"]["id"] == view.station_id
        assert {"audioUri", "imageUri", "timestamp", "whaleFoundConfidence"} <= set(rec)
        # With outputs.orcahello the clip sink also writes the clip-exact pair,
        # where the predictions' startTime (from the clip start) points: the
        # export names that pair once both files are there.
        clips = view.clips_dir
        assert clips is not None
        names = [rec[k].rsplit("/", 1)[1] for k in ("audioUri", "imageUri")]
        exact = [n.rsplit(".", 1)[0] + ".clip." + n.rsplit(".", 1)[1] for n in names]
        (clips / exact[0]).write_bytes((clips / names[0]).read_bytes())
        [rec] = (await call("GET", server.url + "/api/reviews/export")).json()
        assert rec["audioUri"].endswith("/" + names[0])  # the picture is missing: unchanged
        (clips / exact[1]).write_bytes((clips / names[1]).read_bytes())
        [rec] = (await call("GET", server.url + "/api/reviews/export")).json()
        assert [rec[k].rsplit("/", 1)[1] for k in ("audioUri", "imageUri")] == exact

    run_console(tmp_path, test)


def test_non_loopback_reviews_need_the_bearer_token(tmp_path: Path) -> None:
    async def test(server: WebServer, view: StationView) -> None:
        info = await session(server)
        assert info["review_needs_token"] is True
        det = (await call("GET", server.url + "/api/detections")).json()["detections"][0]
        url = f"{server.url}/api/detections/{det['id']}/review"
        csrf = {"X-CSRF-Token": info["csrf"]}
        r = await call("POST", url, json={"SRKWFound": "yes"}, headers=csrf)
        assert r.status_code == 401
        r = await call("POST", url, json={"SRKWFound": "yes"},
                       headers={**csrf, "Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = await call("POST", url, json={"SRKWFound": "yes"},
                       headers={**csrf, "Authorization": "Bearer s3cret"})
        assert r.status_code == 201

    # 0.0.0.0 is not loopback, yet 127.0.0.1 reaches it.
    async def via_loopback(server: WebServer, view: StationView) -> None:
        server.host = "127.0.0.1"
        await test(server, view)

    run_console(tmp_path, via_loopback, host="0.0.0.0", token="s3cret")


def test_token_comes_from_env_or_a_file(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("abc\n")
    assert load_token({"LISTENER_CONSOLE_TOKEN": "x"}) == "x"
    assert load_token({"LISTENER_CONSOLE_TOKEN_FILE": str(tmp_path / "tok")}) == "abc"
    assert load_token({"CREDENTIALS_DIRECTORY": str(tmp_path)}) is None
    (tmp_path / "console-token").write_text("def")
    assert load_token({"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "def"
    with pytest.raises(Exception, match="no such file"):
        load_token({"LISTENER_CONSOLE_TOKEN_FILE": str(tmp_path / "missing")})


def test_live_stream_sends_spectrogram_columns_and_scores(tmp_path: Path) -> None:
    async def test(server: WebServer, view: StationView) -> None:
        await asyncio.sleep(0.5)

        def read() -> list[dict[str, Any]]:
            msgs = []
            with requests.get(server.url + "/api/live", stream=True, timeout=5) as r:
                assert r.headers["Content-Type"] == "text/event-stream"
                for line in r.iter_lines():
                    if line.startswith(b"data: "):
                        msgs.append(json.loads(line[6:]))
                    if len(msgs) == 5:
                        return msgs
            return msgs

        msgs = await asyncio.to_thread(read)
        cols = sum(m["cols"] for m in msgs)
        assert cols >= 8 and sum(len(m["scores"]) for m in msgs) >= 1
        # Bounded: under 2 KiB per message at the default column rate.
        assert max(len(json.dumps(m)) for m in msgs) < 2048 * 4
        r = await call("GET", server.url + "/api/coverage?from=0")
        assert r.status_code == 400 and "at most" in r.text  # over 31 days
        cov = (await call("GET", server.url + "/api/coverage")).json()  # the last hour
        assert cov["scored_s"] >= 1 and cov["spans"][0]["kind"] == "scored"
        r = await call("GET", server.url + "/api/coverage?from=10&to=5")
        assert r.status_code == 400

    run_console(tmp_path, test, live=True)


def test_favicon_and_not_found_pages(tmp_path: Path) -> None:
    async def test(server: WebServer, view: StationView) -> None:
        r = await call("GET", server.url + "/favicon.ico")
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/x-icon"
        assert r.content[:4] == b"\x00\x00\x01\x00"  # an ICO header
        r = await call("GET", server.url + "/no/such/page")
        assert r.status_code == 404 and r.headers["Content-Type"].startswith("text/html")
        assert "Not found" in r.text and "/static/app.css" in r.text
        r = await call("GET", server.url + "/clips/a<i>b/x.png")
        assert r.status_code == 404 and "no station &#x27;a&lt;i&gt;b" in r.text  # escaped
        r = await call("GET", server.url + "/api/nothing")
        assert r.status_code == 404 and r.json() == {"error": "not found"}
        r = await call("GET", server.url + "/api/coverage?station=nowhere")
        assert r.status_code == 404 and "no station 'nowhere'" in r.json()["error"]
        r = await call("POST", server.url + "/api/status")
        assert r.status_code == 405  # a known route, another method: still 405

    run_console(tmp_path, test)


def test_detections_are_deduplicated_and_paged(tmp_path: Path) -> None:
    async def test(server: WebServer, view: StationView) -> None:
        assert view.events_path is not None
        lines = view.events_path.read_bytes().splitlines(keepends=True)
        first = json.loads(lines[0])
        first["whaleFoundConfidence"] = 99.0  # a restart re-scored it: the later line wins
        with open(view.events_path, "ab") as fh:
            fh.write(json.dumps(first).encode() + b"\n")
        dets = (await call("GET", server.url + "/api/detections")).json()
        assert dets["total"] == 2 and len(dets["detections"]) == 2
        assert [d["confidence"] for d in dets["detections"] if d["id"] == first["id"]] == [99.0]
        page = (await call("GET", server.url + "/api/detections?limit=1&offset=1")).json()
        assert page["total"] == 2 and page["offset"] == 1
        assert [d["id"] for d in page["detections"]] == [dets["detections"][1]["id"]]
        r = await call("GET", server.url + "/api/detections?offset=x")
        assert r.status_code == 400 and "offset" in r.text
        for huge in (str(2**63 - 8), "1" + "0" * 30):  # past what islice takes
            r = await call("GET", server.url + f"/api/detections?offset={huge}")
            assert r.status_code == 400 and r.text.startswith("offset: at most")
        last = (await call("GET", server.url + "/api/detections?offset=1000000000")).json()
        assert last["detections"] == [] and last["total"] == 2
        csrf = {"X-CSRF-Token": (await session(server))["csrf"]}
        url = f"{server.url}/api/detections/{first['id']}/review"
        assert (await call("POST", url, json={"SRKWFound": "yes"}, headers=csrf)).status_code \
            == 201
        export = (await call("GET", server.url + "/api/reviews/export")).json()
        assert [(e["id"], e["whaleFoundConfidence"]) for e in export] == [(first["id"], 99.0)]

    run_console(tmp_path, test)


def test_fleet_overview_one_row_per_station(tmp_path: Path) -> None:
    async def main() -> None:
        views = []
        for k in range(3):
            view = make_view(tmp_path / f"s{k}", detections=k, station_id=f"station_{k}")
            views.append(view)
        assert views[0].coverage is not None
        now = time.time()
        views[0].coverage.record(now - 7200, now - 3600, "scored")
        views[0].coverage.record(now - 3600, now - 1800, "lost", "gap")
        base = views[1].status
        views[1].status = lambda: {**base(), "last_error": {
            "message": "latest.txt: HTTP 404", "age_s": 180.0, "utc": now - 180}}
        server = WebServer(CollectorRegistry(), "127.0.0.1", 0, lambda: (True, "ok"),
                           console=Console(views))
        await server.start()
        try:
            page = await call("GET", server.url + "/")
            assert (await session(server))["skipped"] == 0
            assert 'data-page="overview"' in page.text  # a fleet opens on its overview
            status = await call("GET", server.url + "/status")
            assert 'data-page="status"' in status.text
            doc = (await call("GET", server.url + "/api/overview")).json()
        finally:
            await server.stop()
        rows = {r["station_id"]: r for r in doc["stations"]}
        assert list(rows) == ["station_0", "station_1", "station_2"]
        cells = rows["station_0"]["coverage"]["cells"]
        assert len(cells) == 96 and cells[-8:-6] == "ss" and cells[-4:-2] == "ll"
        assert cells[0] == "-"
        assert rows["station_1"]["last_error"] == {"message": "latest.txt: HTTP 404",
                                                  "age_s": 180.0}
        assert rows["station_0"]["last_error"] is None
        # The test events are dated 2026-11-29; none is "today" unless today is that day.
        assert [r["detections_total"] for r in rows.values()] == [0, 1, 2]
        assert rows["station_2"]["lag_s"] == 4.2 and rows["station_2"]["state"] == "running"

    asyncio.run(main())


def test_a_lone_station_with_skipped_files_opens_on_the_overview(tmp_path: Path) -> None:
    why = "b.yaml:2: station.idd: unknown key (did you mean 'id'?)"

    async def main() -> None:
        server = WebServer(CollectorRegistry(), "127.0.0.1", 0, lambda: (True, "ok"),
                           console=Console([make_view(tmp_path)], skipped=[("b.yaml", why)]))
        await server.start()
        try:
            page = await call("GET", server.url + "/")
            assert 'data-page="overview"' in page.text
            assert (await session(server))["skipped"] == 1
            doc = (await call("GET", server.url + "/api/overview")).json()
        finally:
            await server.stop()
        assert doc["skipped"] == [{"file": "b.yaml", "error": why}]
        assert len(doc["stations"]) == 1

    asyncio.run(main())


def test_stations_sharing_an_events_file_show_and_export_only_their_own(
        tmp_path: Path) -> None:
    # Two stations of a fleet naming one outputs.jsonl.path: one file, one reviews file.
    a = make_view(tmp_path, detections=2, station_id="node_a")
    b = make_view(tmp_path, detections=1, station_id="node_b")
    assert a.events_path == b.events_path and a.reviews_path == b.reviews_path

    async def main() -> None:
        server = WebServer(CollectorRegistry(), "127.0.0.1", 0, lambda: (True, "ok"),
                           console=Console([a, b]))
        await server.start()
        try:
            doc = (await call("GET", server.url + "/api/detections")).json()
            found = [(d["station"], d["id"]) for d in doc["detections"]]
            assert doc["total"] == 3 and len(set(found)) == 3
            assert sorted(s for s, _ in found) == ["node_a", "node_a", "node_b"]
            rows = (await call("GET", server.url + "/api/overview")).json()["stations"]
            assert [r["detections_total"] for r in rows] == [2, 1]
            csrf = {"X-CSRF-Token": (await session(server))["csrf"]}
            a_id = next(i for s, i in found if s == "node_a")
            wrong = await call("POST", f"{server.url}/api/detections/{a_id}/review"
                               "?station=node_b", json={"SRKWFound": "yes"}, headers=csrf)
            assert wrong.status_code == 404  # not node_b's detection
            for station, event_id in found:
                r = await call("POST", f"{server.url}/api/detections/{event_id}/review"
                               f"?station={station}", json={"SRKWFound": "yes"}, headers=csrf)
                assert r.status_code == 201
            export = (await call("GET", server.url + "/api/reviews/export")).json()
        finally:
            await server.stop()
        assert sorted(r["id"] for r in export) == sorted(i for _, i in found)

    asyncio.run(main())
